//! `--fix`: the additive DestinationRules of the runbook's Gotchas, planned as objects.
//!
//! Only these rules are ever proposed, and only when no object of that name exists (so applying
//! them never changes an existing object): the mesh-wide `*.local` ISTIO_MUTUAL rule in the root
//! namespace with its `api-server` DISABLE companion (as Istio's mesh-wide mTLS chart ships them),
//! and plaintext (DISABLE) port rules for Citadel 8060 and, where the gateway forwards it as raw
//! TCP, Pilot 15011. Everything else gets a suggested patch in a hint.

use serde_json::{Value, json};

use super::CheckContext;
use super::mesh::{DOMAIN, TlsMode, is_mesh_wide};
use crate::istio::Era;
use crate::plan::write::{Kind, Same, Write};
use crate::plan::{Action, Change, Plan};
use crate::snapshot::{Kind as SnapKind, Obj, Snapshot};

/// Name of the mesh-wide rule (the runbook's).
pub const DEFAULT_DR_NAME: &str = "default";
/// Name of the Citadel rule (the runbook's).
pub const CITADEL_DR_NAME: &str = "meshexpansion-dr-citadel";
/// Name of the Pilot rule (Istio 1.4's mesh-expansion chart's).
pub const PILOT_DR_NAME: &str = "meshexpansion-dr-pilot";
/// Name of the API-server rule Istio's own mesh-wide mTLS chart ships beside `default`.
pub const API_SERVER_DR_NAME: &str = "api-server";

/// A control-plane port a VM reaches through the gateway that would be wrapped in mTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// `istio-citadel` or `istio-pilot`.
    pub service: &'static str,
    /// 8060 or 15011.
    pub port: u32,
    /// The rule that fixes it.
    pub rule_name: &'static str,
    /// The TLS the gateway uses today (`None`: none, but the mesh-wide rule STRICT needs will add ISTIO_MUTUAL).
    pub current: Option<TlsMode>,
    /// The DestinationRule that decides it today.
    pub decided_by: Option<String>,
}

/// Whether the legacy mesh exposes mesh-expansion ports (8060 or 15011) on a gateway.
pub fn mesh_expansion(snap: &Snapshot) -> bool {
    let ports_on_services = snap.of(SnapKind::Service).iter().any(|s| {
        s.label("istio") == Some("ingressgateway")
            && service_ports(s).iter().any(|p| matches!(p, 8060 | 15011))
    });
    ports_on_services
        || !gateway_servers(snap, 8060).is_empty()
        || !gateway_servers(snap, 15011).is_empty()
}

/// A Service's port numbers.
pub fn service_ports(svc: &Obj) -> Vec<u32> {
    crate::doctor::mesh::service_spec(svc)
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| u32::try_from(p.port).ok())
        .collect()
}

/// Gateway servers on a port: `(gateway, server)`.
pub fn gateway_servers(snap: &Snapshot, port: u32) -> Vec<(&Obj, &Value)> {
    snap.of(SnapKind::Gateway)
        .iter()
        .flat_map(|g| {
            g.spec()
                .get("servers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(move |s| {
                    s.pointer("/port/number").and_then(Value::as_u64) == Some(u64::from(port))
                })
                .map(move |s| (g, s))
        })
        .collect()
}

/// Control-plane ports of a legacy mesh-expansion setup that the gateway would send with
/// (Istio) mTLS, breaking the VM's own TLS to Citadel/Pilot.
pub fn control_plane_gaps(snap: &Snapshot, ctx: &CheckContext) -> Vec<Gap> {
    if ctx.era != Some(Era::Legacy) || !mesh_expansion(snap) {
        return Vec::new();
    }
    let ns = ctx.istio_ns.as_str();
    // Pilot needs plaintext only when a gateway forwards 15011 as raw TCP (the VM's TLS inside).
    let pilot_needed = gateway_servers(snap, 15011).iter().any(|(_, s)| {
        s.pointer("/port/protocol")
            .and_then(Value::as_str)
            .is_some_and(|p| p.eq_ignore_ascii_case("TCP"))
    });
    let mut wanted = vec![("istio-citadel", 8060, CITADEL_DR_NAME)];
    if pilot_needed {
        wanted.push(("istio-pilot", 15011, PILOT_DR_NAME));
    }
    let mut gaps = Vec::new();
    for (service, port, rule_name) in wanted {
        let host = format!("{service}.{ns}.svc.{DOMAIN}");
        // The gateway's proxy runs in the Istio namespace: resolve as its client.
        let winner = ctx.mesh.resolve(Some(ns), &host, Some(ns)).first().copied();
        let current = winner.and_then(|i| ctx.mesh.rules[i].tls_for(Some(port), None));
        let future_mutual = winner.is_none() && !ctx.auto_mtls;
        let broken = match current {
            Some(TlsMode::Disable) => false,
            Some(_) => true,
            None => future_mutual,
        };
        if broken {
            gaps.push(Gap {
                service,
                port,
                rule_name,
                current,
                decided_by: winner.map(|i| ctx.mesh.rules[i].obj.reference()),
            });
        }
    }
    gaps
}

fn networking_api_version(snap: &Snapshot, era: Option<Era>) -> String {
    let version = snap.networking_version.clone().unwrap_or_else(|| {
        match era {
            Some(Era::Legacy) => "v1alpha3",
            _ => "v1beta1",
        }
        .to_string()
    });
    format!("networking.istio.io/{version}")
}

fn rule(api_version: &str, ns: &str, name: &str, labels: &Value, spec: &Value) -> Obj {
    Obj::new(json!({
        "apiVersion": api_version,
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
    }))
}

/// The objects `--fix` would apply, in apply order. Pure.
pub fn plan(snap: &Snapshot, ctx: &CheckContext) -> Vec<Obj> {
    let api_version = networking_api_version(snap, ctx.era);
    let exists = |ns: &str, name: &str| snap.get(SnapKind::DestinationRule, ns, name).is_some();
    let mut out = Vec::new();
    let has_mesh_mutual = ctx.mesh.rules.iter().any(|r| {
        is_mesh_wide(&r.host)
            && r.ns == ctx.root_ns
            && r.export.visible_to(None)
            && r.top_tls() == Some(TlsMode::IstioMutual)
    });
    let adds_default = !ctx.auto_mtls && !has_mesh_mutual && !exists(&ctx.root_ns, DEFAULT_DR_NAME);
    if adds_default {
        out.push(rule(
            &api_version,
            &ctx.root_ns,
            DEFAULT_DR_NAME,
            &json!({"app.kubernetes.io/managed-by": "meshvm"}),
            &json!({"host": "*.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}),
        ));
    }
    // The Kubernetes API server has no sidecar: Istio's own mesh-wide mTLS chart ships an
    // `api-server` DISABLE rule beside `default`, or every in-mesh call to it fails.
    let api_host = format!("kubernetes.default.svc.{DOMAIN}");
    let api_tls = ctx
        .mesh
        .resolve(Some(&ctx.root_ns), &api_host, Some("default"))
        .first()
        .and_then(|&i| ctx.mesh.rules[i].tls_for(Some(443), None));
    let api_gets_mutual = match api_tls {
        Some(mode) => mode == TlsMode::IstioMutual,
        None => adds_default,
    };
    let api_service_seen = snap
        .get(SnapKind::Service, "default", "kubernetes")
        .is_some();
    if !ctx.auto_mtls
        && api_service_seen
        && api_gets_mutual
        && (adds_default || has_mesh_mutual)
        && !exists(&ctx.root_ns, API_SERVER_DR_NAME)
    {
        out.push(rule(
            &api_version,
            &ctx.root_ns,
            API_SERVER_DR_NAME,
            &json!({"app.kubernetes.io/managed-by": "meshvm"}),
            &json!({"host": api_host, "trafficPolicy": {"tls": {"mode": "DISABLE"}}}),
        ));
    }
    for gap in control_plane_gaps(snap, ctx) {
        if exists(&ctx.istio_ns, gap.rule_name) {
            continue;
        }
        let component = gap.service.trim_start_matches("istio-");
        out.push(rule(
            &api_version,
            &ctx.istio_ns,
            gap.rule_name,
            &json!({"istio": component, "app.kubernetes.io/managed-by": "meshvm"}),
            &json!({
                "host": format!("{}.{}.svc.{DOMAIN}", gap.service, ctx.istio_ns),
                "trafficPolicy": {"portLevelSettings": [{"port": {"number": gap.port}, "tls": {"mode": "DISABLE"}}]},
            }),
        ));
    }
    out
}

/// The rows `--fix` writes: one create per rule, at the apiVersion it carries, one after another
/// (so a failure part-way says exactly which were and were not written). Only rules no object of
/// that name holds are proposed, and each is sent as a create (POST), so `--fix` never changes an
/// object: one that appeared meanwhile with the same content reads "unchanged", one that differs
/// stops the run naming it.
pub fn rows(objs: &[Obj]) -> Plan {
    let mut plan = Plan::default();
    for obj in objs {
        plan.push(
            Change::new(
                Action::Create,
                Kind::DestinationRule,
                Some(obj.namespace()),
                obj.name(),
            )
            .object(obj.to_value())
            .write(Write::create(Kind::DestinationRule, obj.to_value()).same(Same::Contains)),
        );
    }
    plan.in_sequence();
    plan
}

/// `--fix --dry-run`: `client` sends nothing, `server` sends each create with `dryRun=All` (the
/// API server validates and admits it, stores nothing); either way the table of what would be
/// written goes to `err`, marked "(dry run)", and nothing is asked.
pub async fn dry_run(
    conn: &crate::kube::Connection,
    objs: &[Obj],
    mode: crate::flags::DryRun,
    err: &mut impl std::io::Write,
) -> Result<(), crate::plan::write::Error> {
    let mut plan = rows(objs);
    let result = crate::plan::write::execute(conn, &mut plan, mode).await;
    let how = match mode {
        crate::flags::DryRun::Server => {
            "the API server validated each create (dryRun=All) and stored nothing"
        }
        _ => "nothing was sent",
    };
    let _ = writeln!(err, "--fix (dry run): {how}");
    let _ = plan.write(err, crate::flags::OutputFormat::Table, false);
    result.map_err(|failure| failure.error)
}

/// Objects as a multi-document YAML stream (what `--fix` shows before applying).
pub fn render_yaml(objs: &[Obj]) -> String {
    objs.iter()
        .map(|o| serde_saphyr::to_string(&o.to_value()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::CheckOptions;
    use crate::doctor::testutil::Fixture;

    fn planned(f: &Fixture) -> Vec<String> {
        let snap = f.snapshot();
        let ctx = CheckContext::new(
            &snap,
            &CheckOptions {
                now: Some(0),
                ..Default::default()
            },
            vec![],
        );
        plan(&snap, &ctx).iter().map(Obj::ns_name).collect()
    }

    #[test]
    fn legacy_gets_both_gotcha_rules_and_pilot() {
        assert_eq!(
            planned(&Fixture::legacy()),
            [
                "istio-system/default",
                "istio-system/meshexpansion-dr-citadel",
                "istio-system/meshexpansion-dr-pilot"
            ]
        );
        assert_eq!(
            planned(&Fixture::legacy().with_default_dr().with_citadel_dr()),
            ["istio-system/meshexpansion-dr-pilot"]
        );
    }

    const API_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec: {ports: [{name: https, port: 443}]}\n";

    #[test]
    fn the_mesh_wide_rule_comes_with_its_api_server_companion() {
        // Seen live (the API server's Service is there, without a sidecar).
        assert_eq!(
            planned(&Fixture::legacy().with(API_SERVICE)),
            [
                "istio-system/default",
                "istio-system/api-server",
                "istio-system/meshexpansion-dr-citadel",
                "istio-system/meshexpansion-dr-pilot"
            ]
        );
        // A user's own mesh-wide rule gets the companion it lacks.
        assert_eq!(
            planned(
                &Fixture::legacy()
                    .with(API_SERVICE)
                    .with_default_dr()
                    .with_citadel_dr()
            ),
            [
                "istio-system/api-server",
                "istio-system/meshexpansion-dr-pilot"
            ]
        );
        // A rule already sending plaintext to the API server leaves nothing to add.
        let covered = Fixture::legacy().with(API_SERVICE).with_default_dr().with_citadel_dr().with(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: kube-api, namespace: istio-system}\nspec: {host: kubernetes.default.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}\n",
        );
        assert_eq!(planned(&covered), ["istio-system/meshexpansion-dr-pilot"]);
    }

    #[test]
    fn modern_and_fixed_meshes_get_nothing() {
        assert!(planned(&Fixture::modern()).is_empty());
        let fixed = Fixture::legacy().with_default_dr().with_citadel_dr().with(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: meshexpansion-dr-pilot, namespace: istio-system}\nspec: {host: istio-pilot.istio-system.svc.cluster.local, trafficPolicy: {portLevelSettings: [{port: {number: 15011}, tls: {mode: DISABLE}}]}}\n",
        );
        assert!(planned(&fixed).is_empty());
    }

    #[test]
    fn never_overwrites_an_existing_object() {
        // A `default` rule that is not ISTIO_MUTUAL is a patch suggestion, not an additive fix.
        let f = Fixture::legacy().with(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: default, namespace: istio-system}\nspec: {host: '*.local', trafficPolicy: {tls: {mode: DISABLE}}}\n",
        );
        assert!(!planned(&f).contains(&"istio-system/default".to_string()));
    }

    #[test]
    fn rows_apply_each_rule_at_its_own_version_in_order() {
        let snap = Fixture::legacy().snapshot();
        let ctx = CheckContext::new(&snap, &CheckOptions::default(), vec![]);
        let plan = rows(&plan(&snap, &ctx));
        assert_eq!(plan.changes.len(), 3);
        for (i, row) in plan.changes.iter().enumerate() {
            let write = row.write.as_ref().unwrap();
            // A create, as the row says: --fix never changes an existing object.
            assert_eq!(write.verb, crate::plan::write::Verb::Create);
            assert_eq!(write.resource.api_version(), "networking.istio.io/v1alpha3");
            assert_eq!(write.after, if i == 0 { vec![] } else { vec![i - 1] });
            assert_eq!(row.words(), "would create");
        }
    }

    #[test]
    fn rendered_yaml_matches_the_runbook() {
        let snap = Fixture::legacy().with(API_SERVICE).snapshot();
        let ctx = CheckContext::new(&snap, &CheckOptions::default(), vec![]);
        let yaml = render_yaml(&plan(&snap, &ctx));
        assert!(
            yaml.contains("apiVersion: networking.istio.io/v1alpha3"),
            "{yaml}"
        );
        assert!(
            yaml.contains("mode: ISTIO_MUTUAL") && yaml.contains("number: 8060"),
            "{yaml}"
        );
        let back: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(back.len(), 4);
        assert!(
            yaml.contains("host: kubernetes.default.svc.cluster.local"),
            "{yaml}"
        );
    }
}
