//! `mtls.probes`: kubelet probes on injected workloads under STRICT.
//!
//! The kubelet probes from outside the mesh, in plaintext. Unless the injector rewrites a probe
//! to the agent's status port (which is never captured), it lands on the sidecar:
//! - an HTTP (or gRPC) probe is refused under STRICT, so the pod goes unready or is restarted;
//! - a TCP probe is accepted by the sidecar whatever the app does, so it tests nothing.
//!
//! Rewriting, per release (istio/istio, behaviour modelled):
//! - the pod annotation `sidecar.istio.io/rewriteAppHTTPProbers` wins when it parses as a bool,
//!   else the injector's `rewriteAppHTTPProbe` (`@1.4.2 pkg/kube/inject/app_probe.go:48-60`,
//!   `@1.22.0 pkg/kube/inject/app_probe.go:33-42`, `webhook.go:759`);
//! - 1.4 defaults it off (`@1.4.2 install/kubernetes/helm/istio/charts/sidecarInjectorWebhook/values.yaml:38`,
//!   rendered into the `istio-sidecar-injector` ConfigMap's `values` and the first line of its
//!   template, `files/injection-template.yaml:1`, `templates/sidecar-injector-configmap.yaml:14-24`)
//!   and rewrites only readiness and liveness HTTP probes (`app_probe.go@1.4.2:108-113,195-200`);
//! - modern releases default it on (`@1.8.0 manifests/charts/istio-control/istio-discovery/values.yaml:99`,
//!   `@1.22.0 …/values.yaml:135`) and rewrite startup probes too (`app_probe.go@1.8.0:168`),
//!   TCP probes from 1.12 (`app_probe.go@1.12.0:67`, `REWRITE_TCP_PROBES` default true,
//!   `pilot/pkg/features/pilot.go@1.12.0:550-553`) and gRPC probes from 1.13
//!   (`app_probe.go@1.13.0:72`).

use k8s_openapi::api::core::v1::Probe;
use serde_json::Value;

use super::workloads::{Sidecar, Workload};
use super::{list, or_pass};
use crate::doctor::mesh::PeerMode;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::snapshot::{ContainerShape, Kind, Obj, Snapshot};

/// Fails for HTTP/gRPC probes that reach the sidecar under STRICT (not rewritten, port captured);
/// warns for TCP probes that the sidecar answers whatever the app does.
pub struct MtlsProbes;

const ID: &str = "mtls.probes";

/// Where a container keeps one kind of probe.
type ProbeOf = fn(&ContainerShape) -> Option<&Probe>;

const PROBES: [(ProbeOf, &str); 3] = [
    (|c| c.readiness_probe.as_deref(), "readiness"),
    (|c| c.liveness_probe.as_deref(), "liveness"),
    (|c| c.startup_probe.as_deref(), "startup"),
];

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The injector ConfigMap (`istio-sidecar-injector`, or a revision's) in the Istio namespace.
fn injector_configmap<'a>(snap: &'a Snapshot, istio_ns: &str) -> Option<&'a Obj> {
    snap.get(Kind::ConfigMap, istio_ns, "istio-sidecar-injector")
        .or_else(|| {
            snap.of(Kind::ConfigMap).iter().find(|c| {
                c.namespace() == istio_ns && c.name().starts_with("istio-sidecar-injector")
            })
        })
}

/// The injector's `rewriteAppHTTPProbe`: `values` (JSON) `sidecarInjectorWebhook.rewriteAppHTTPProbe`,
/// else the `config` template's `rewriteAppHTTPProbe:` line (1.4).
fn injector_rewrite(cm: &Obj) -> Option<bool> {
    let from_values = cm
        .data("values")
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            v.pointer("/sidecarInjectorWebhook/rewriteAppHTTPProbe")
                .and_then(Value::as_bool)
        });
    from_values.or_else(|| {
        let text = String::from_utf8(cm.data("config")?).ok()?;
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("rewriteAppHTTPProbe:")
                .and_then(|v| parse_bool(v.trim()))
        })
    })
}

/// What one probe does under STRICT.
enum Verdict {
    Fine,
    Refused(String),
    TestsNothing(String),
}

fn judge(
    w: &Workload<'_>,
    probe: &Probe,
    what: &str,
    container: &str,
    rewrite: bool,
    minor: u32,
    uncaptured: &std::collections::BTreeSet<u32>,
) -> Verdict {
    let legacy = minor < 5;
    let label = format!("{container} {what}");
    if let Some(http) = &probe.http_get {
        let port = w.port_number(&http.port);
        let path = http.path.as_deref().unwrap_or("/");
        if port == Some(w.status_port()) && path.starts_with("/app-health/") {
            return Verdict::Fine; // already rewritten by the injector
        }
        if port.is_some_and(|p| uncaptured.contains(&p)) {
            return Verdict::Fine;
        }
        let rewritten = !w.injected() && rewrite && (!legacy || what != "startup");
        if rewritten {
            return Verdict::Fine;
        }
        let port_text = port.map_or_else(|| "?".to_string(), |p| p.to_string());
        return Verdict::Refused(format!("{label} HTTP :{port_text}{path}"));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = w.port_number(&tcp.port);
        if port.is_some_and(|p| uncaptured.contains(&p))
            || (!w.injected() && rewrite && minor >= 12)
        {
            return Verdict::Fine;
        }
        let port_text = port.map_or_else(|| "?".to_string(), |p| p.to_string());
        return Verdict::TestsNothing(format!("{label} TCP :{port_text}"));
    }
    if let Some(grpc) = &probe.grpc {
        let port = u32::try_from(grpc.port).ok();
        if port.is_some_and(|p| uncaptured.contains(&p))
            || (!w.injected() && rewrite && minor >= 13)
        {
            return Verdict::Fine;
        }
        let port_text = port.map_or_else(|| "?".to_string(), |p| p.to_string());
        return Verdict::Refused(format!("{label} gRPC :{port_text}"));
    }
    Verdict::Fine
}

impl Check for MtlsProbes {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "kubelet HTTP/gRPC probes on injected workloads that the injector does not rewrite (refused under STRICT); TCP probes the sidecar answers whatever the app does"
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        if let Some(skip) = super::need_workloads(ID, ctx) {
            return skip;
        }
        let release = ctx.mesh.release;
        let cm = injector_configmap(snap, &ctx.istio_ns);
        let configured = cm.and_then(injector_rewrite);
        let default = !release.legacy();
        let global = configured.unwrap_or(default);
        let global_source = match (cm, configured) {
            (Some(cm), Some(_)) => format!("{}'s rewriteAppHTTPProbe", cm.reference()),
            _ => format!("Istio 1.{}'s default", release.minor),
        };
        let mut out = Vec::new();
        let mut judged = 0;
        for w in &ctx.workloads {
            if w.sidecar(snap, ctx.era) != Sidecar::Yes || w.host_network() {
                continue;
            }
            judged += 1;
            let annotated = w
                .annotation("sidecar.istio.io/rewriteAppHTTPProbers")
                .and_then(parse_bool);
            let rewrite = annotated.unwrap_or(global);
            let uncaptured = w.uncaptured_ports(ctx.era);
            let mut refused = Vec::new();
            let mut nothing = Vec::new();
            for c in w.app_containers() {
                let name = if c.name.is_empty() { "?" } else { &c.name };
                for (probe_of, what) in PROBES {
                    let Some(probe) = probe_of(c) else { continue };
                    match judge(w, probe, what, name, rewrite, release.minor, &uncaptured) {
                        Verdict::Fine => {}
                        Verdict::Refused(p) => refused.push(p),
                        Verdict::TestsNothing(p) => nothing.push(p),
                    }
                }
            }
            let why = match (w.injected(), annotated) {
                (true, _) => "the injector did not rewrite them".to_string(),
                (false, Some(false)) => {
                    "sidecar.istio.io/rewriteAppHTTPProbers: \"false\" turns rewriting off"
                        .to_string()
                }
                (false, _) if !global => format!("probe rewriting is off ({global_source})"),
                (false, _) => "this release does not rewrite them".to_string(),
            };
            let strict_now = ctx.mesh.ns_mode(&w.ns).mode == PeerMode::Strict;
            if !refused.is_empty() {
                let (breaks, when) = if strict_now {
                    (Breaks::Now, "refused now: its namespace is already STRICT")
                } else {
                    (Breaks::WhenStrict, "refused once STRICT is turned on")
                };
                let f = Finding::fail(
                    ID,
                    format!(
                        "kubelet probes reach the sidecar in plaintext ({why}): {} — {when}, so the pod goes unready or is restarted",
                        list(&refused, 4)
                    ),
                )
                .on(w.obj)
                .object(w.reference.clone())
                .ns(&w.ns)
                .breaks(breaks)
                .hint(if release.legacy() {
                    "annotate the pod template sidecar.istio.io/rewriteAppHTTPProbers: \"true\" (or install with sidecarInjectorWebhook.rewriteAppHTTPProbe=true) and restart the workload; 1.4 rewrites readiness and liveness HTTP probes only"
                } else {
                    "remove sidecar.istio.io/rewriteAppHTTPProbers: \"false\" (or set sidecarInjectorWebhook.rewriteAppHTTPProbe=true) and restart the workload"
                });
                out.push(f);
            }
            if !nothing.is_empty() {
                out.push(
                    Finding::warn(
                        ID,
                        format!(
                            "TCP probes connect to the sidecar, which accepts whatever the app does: {} test nothing",
                            list(&nothing, 4)
                        ),
                    )
                    .on(w.obj)
                    .object(w.reference.clone())
                    .ns(&w.ns)
                    .now()
                    .hint(if release.legacy() {
                        "use an HTTP probe with rewriting on, or an exec probe; 1.4 does not rewrite TCP probes"
                    } else {
                        "turn probe rewriting on (Istio 1.12+ rewrites TCP probes to the agent), or use an HTTP or exec probe"
                    }),
                );
            }
        }
        or_pass(
            ID,
            out,
            format!(
                "the probes of {judged} injected workload(s) survive STRICT (rewriting: {} by {global_source})",
                if global { "on" } else { "off" }
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Skip, Warn};
    use crate::doctor::testutil::{Fixture, expect};

    fn deploy(ns: &str, meta: &str, container: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  template:\n    metadata: {meta}\n    spec: {{containers: [{container}]}}\n"
        )
    }

    const HTTP: &str = "{name: app, ports: [{name: http, containerPort: 8080}], readinessProbe: {httpGet: {port: http, path: /healthz}}}";
    const TCP: &str = "{name: app, livenessProbe: {tcpSocket: {port: 8080}}}";
    const STARTUP: &str = "{name: app, startupProbe: {httpGet: {port: 8080, path: /s}}}";

    fn injector(values: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio-sidecar-injector, namespace: istio-system}}\ndata:\n  values: '{values}'\n"
        )
    }

    fn modern_app() -> Fixture {
        Fixture::modern().with(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n",
        )
    }

    #[test]
    fn table() {
        let rewrite = "{annotations: {sidecar.istio.io/rewriteAppHTTPProbers: 'true'}}";
        let cases = [
            ("legacy: HTTP probe, rewriting off by default", Fixture::legacy().with(&deploy("bookinfo", "{}", HTTP)), Fail),
            ("legacy: HTTP probe, annotation rewrites", Fixture::legacy().with(&deploy("bookinfo", rewrite, HTTP)), Pass),
            (
                "legacy: HTTP probe, injector values rewrite",
                Fixture::legacy()
                    .with(&injector(r#"{"sidecarInjectorWebhook":{"rewriteAppHTTPProbe":true}}"#))
                    .with(&deploy("bookinfo", "{}", HTTP)),
                Pass,
            ),
            (
                "legacy: HTTP probe, injector template line rewrites",
                Fixture::legacy()
                    .with("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio-sidecar-injector, namespace: istio-system}\ndata:\n  config: \"policy: enabled\\ntemplate: |-\\n  rewriteAppHTTPProbe: true\\n\"\n")
                    .with(&deploy("bookinfo", "{}", HTTP)),
                Pass,
            ),
            ("legacy: startup probe is not rewritten by 1.4", Fixture::legacy().with(&deploy("bookinfo", rewrite, STARTUP)), Fail),
            ("legacy: TCP probe tests nothing", Fixture::legacy().with(&deploy("bookinfo", rewrite, TCP)), Warn),
            (
                "legacy: probe on an excluded port",
                Fixture::legacy().with(&deploy("bookinfo", "{annotations: {traffic.sidecar.istio.io/excludeInboundPorts: '8080'}}", HTTP)),
                Pass,
            ),
            (
                "legacy: uninjected workload is not judged",
                Fixture::legacy().with(&deploy("bookinfo", "{annotations: {sidecar.istio.io/inject: 'false'}}", HTTP)),
                Pass,
            ),
            (
                "legacy: live pod the injector did not rewrite",
                Fixture::legacy().with("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: bookinfo, annotations: {sidecar.istio.io/status: '{}'}}\nspec: {containers: [{name: app, readinessProbe: {httpGet: {port: 8080, path: /r}}}, {name: istio-proxy}]}\n"),
                Fail,
            ),
            (
                "legacy: live pod already rewritten",
                Fixture::legacy().with("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: bookinfo, annotations: {sidecar.istio.io/status: '{}'}}\nspec: {containers: [{name: app, readinessProbe: {httpGet: {port: 15020, path: /app-health/app/readyz}}}, {name: istio-proxy}]}\n"),
                Pass,
            ),
            ("modern: rewrites by default", modern_app().with(&deploy("shop", "{}", HTTP)), Pass),
            ("modern: startup and TCP rewritten", modern_app().with(&deploy("shop", "{}", STARTUP)).with(&deploy("shop", "{}", TCP)), Pass),
            (
                "modern: turned off on the pod",
                modern_app().with(&deploy("shop", "{annotations: {sidecar.istio.io/rewriteAppHTTPProbers: 'false'}}", HTTP)),
                Fail,
            ),
            (
                "modern: turned off in the injector",
                modern_app()
                    .with(&injector(r#"{"sidecarInjectorWebhook":{"rewriteAppHTTPProbe":false}}"#))
                    .with(&deploy("shop", "{}", TCP)),
                Warn,
            ),
            ("no workloads", Fixture::modern(), Skip),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&MtlsProbes), severity, case);
        }
    }

    #[test]
    fn names_the_workload_and_probe() {
        let out = Fixture::legacy()
            .with(&deploy("bookinfo", "{}", HTTP))
            .run(&MtlsProbes);
        let f = &out[0];
        assert_eq!(f.object, "Deployment bookinfo/web");
        assert_eq!(f.namespaces, ["bookinfo"]);
        assert_eq!(f.breaks, Some(Breaks::WhenStrict));
        assert!(
            f.message.contains("app readiness HTTP :8080/healthz")
                && f.message
                    .contains("probe rewriting is off (Istio 1.4's default)"),
            "{}",
            f.message
        );
    }
}
