//! `network.global-services`: the path a VM across networks calls cluster Services by.

use std::collections::BTreeMap;

use serde_json::Value;

use super::gateway_ports::binds;
use super::{gateway_addresses, gateway_service, multi_network, or_pass};
use crate::doctor::fix::{gateway_servers, service_ports};
use crate::doctor::mesh::service_spec;
use crate::doctor::{Breaks, Check, CheckContext, Finding};
use crate::istio::{Era, MULTI_NETWORK_PORT, NETWORK_LABEL};
use crate::snapshot::{Kind, Obj, Snapshot, SourceKind, borrowed};

/// Legacy (1.4): each `.global` ServiceEntry has an address no other ServiceEntry holds and its
/// endpoints at the ingress gateway's current address on 15443; the gateway Service exposes
/// 15443, a Gateway serves `*.global` there as AUTO_PASSTHROUGH, the `.global` SNI rewrite
/// EnvoyFilter and the `*.global` ISTIO_MUTUAL DestinationRule exist; a cluster DNS stub for
/// `global` points at istiocoredns. Modern: the east-west gateway's labels and
/// `ISTIO_META_REQUESTED_NETWORK_VIEW`, and `cross-network-gateway` on 15443 for `*.local`.
pub struct NetworkGlobalServices;

const ID: &str = "network.global-services";

/// The gateway's multi-cluster port (Istio 1.4.2 install/kubernetes/helm/istio/charts/gateways/
/// templates/preconfigured.yaml:176-184: `istio-multicluster-ingressgateway`, `*.global` on
/// 15443, TLS AUTO_PASSTHROUGH).
const PORT: u64 = MULTI_NETWORK_PORT as u64;

/// The Service istiocoredns answers `.global` names from (Istio 1.4.2 istiocoredns chart; the
/// 1.4 multicluster docs' DNS step forwards the `global` stub domain to its ClusterIP).
const ISTIOCOREDNS: &str = "istiocoredns";

/// An RFC 6901 pointer token.
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// `kubectl … -p '<json>'`, the JSON single-quoted for the shell.
fn patch_arg(v: &Value) -> String {
    format!("'{}'", v.to_string().replace('\'', "'\"'\"'"))
}

fn is_global(se: &Obj) -> bool {
    strings(se.at(&["spec", "hosts"]))
        .iter()
        .any(|h| h.ends_with(".global"))
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn legacy(snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
    let ns = &ctx.istio_ns;
    let globals: Vec<&Obj> = snap
        .of(Kind::ServiceEntry)
        .iter()
        .filter(|s| is_global(s))
        .collect();
    let mut out = dns(snap, ctx);
    if globals.is_empty() {
        return or_pass(ID, out, "no .global services");
    }
    // Unique addresses: the VM's sidecar tells the services apart by them.
    let mut holders: BTreeMap<&str, Vec<&Obj>> = BTreeMap::new();
    for se in snap.of(Kind::ServiceEntry) {
        for a in strings(se.at(&["spec", "addresses"])) {
            holders.entry(a).or_default().push(se);
        }
    }
    let gateway = gateway_service(snap, Era::Legacy, ns);
    let ips = gateway.map(|g| gateway_addresses(g).0).unwrap_or_default();
    for se in &globals {
        let addresses = strings(se.at(&["spec", "addresses"]));
        if addresses.is_empty() {
            out.push(
                Finding::fail(ID, "names no addresses: the VM's /etc/hosts line for it has nothing to point at, and its sidecar cannot tell this service's traffic from another's")
                    .on(se)
                    .hint("give it a 127.255.x.y address no other ServiceEntry holds (meshvm's prepare --expose picks one)"),
            );
        }
        for a in addresses {
            let others: Vec<String> = holders[a]
                .iter()
                .filter(|o| o.ns_name() != se.ns_name())
                .map(|o| o.ns_name())
                .collect();
            if !others.is_empty() {
                out.push(
                    Finding::fail(ID, format!("address {a} is also held by ServiceEntry {}: the VM's sidecar sends both services' traffic to one of them", others.join(", ")))
                        .on(se)
                        .hint("give each .global ServiceEntry its own 127.255.x.y address, and the VM's /etc/hosts the same (re-run bundle)"),
                );
            }
        }
        let endpoints: Vec<&Value> = se
            .at(&["spec", "endpoints"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        if endpoints.is_empty() {
            out.push(
                Finding::fail(ID, "has no endpoints: the VM has nowhere to send its calls (the gateway's address on 15443)")
                    .on(se),
            );
        }
        let mut ops = Vec::new();
        let mut problems = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let address = ep.get("address").and_then(Value::as_str).unwrap_or("");
            if !ips.is_empty() && !ips.iter().any(|ip| ip == address) {
                problems.push(format!(
                    "endpoint {address:?} is not the gateway's current address {}",
                    ips.join(", ")
                ));
                ops.push(serde_json::json!({"op": "replace", "path": format!("/spec/endpoints/{i}/address"), "value": ips[0]}));
            }
            let ports = ep.get("ports").and_then(Value::as_object);
            if ports.is_none_or(serde_json::Map::is_empty) {
                problems.push(format!(
                    "endpoint {address:?} names no ports (15443 wanted)"
                ));
            }
            for (name, port) in ports.into_iter().flatten() {
                if port.as_u64() != Some(PORT) {
                    problems.push(format!(
                        "endpoint {address:?} port {name} is {port}, not the gateway's 15443"
                    ));
                    ops.push(serde_json::json!({"op": "replace", "path": format!("/spec/endpoints/{i}/ports/{}", pointer_token(name)), "value": PORT}));
                }
            }
        }
        if !problems.is_empty() {
            let mut f = Finding::fail(
                ID,
                format!(
                    "{}: the VM's calls to {} never reach the gateway's AUTO_PASSTHROUGH listener",
                    problems.join("; "),
                    strings(se.at(&["spec", "hosts"])).join(", ")
                ),
            )
            .on(se);
            if !ops.is_empty() {
                f = f.hint(format!(
                    "point it at the gateway: `kubectl -n {} patch serviceentry {} --type=json -p {}`",
                    se.namespace(),
                    se.name(),
                    patch_arg(&Value::Array(ops))
                ));
            }
            out.push(f);
        }
    }
    // The gateway side, end to end: Service port, Gateway server, SNI rewrite, mTLS rule.
    if let Some(svc) = gateway {
        if !service_ports(svc).contains(&(PORT as u32)) {
            out.push(
                Finding::fail(ID, "the ingress gateway Service does not expose 15443: .global calls from the VM are refused")
                    .on(svc)
                    .hint(format!(
                        "`kubectl -n {} patch service {} --type=json -p {}`",
                        svc.namespace(),
                        svc.name(),
                        patch_arg(&serde_json::json!([{"op": "add", "path": "/spec/ports/-", "value": {"name": "tls", "port": PORT, "targetPort": PORT}}]))
                    )),
            );
        }
        let servers: Vec<(&Obj, &Value)> = gateway_servers(snap, PORT as u32)
            .into_iter()
            .filter(|(g, _)| binds(snap, g, svc))
            .collect();
        let passthrough = servers.iter().any(|(_, s)| {
            s.pointer("/tls/mode").and_then(Value::as_str) == Some("AUTO_PASSTHROUGH")
                && strings(s.get("hosts"))
                    .iter()
                    .any(|h| matches!(*h, "*.global" | "*"))
        });
        if !passthrough {
            let seen = servers
                .iter()
                .map(|(g, s)| {
                    format!(
                        "{} (tls.mode {})",
                        g.ns_name(),
                        s.pointer("/tls/mode")
                            .and_then(Value::as_str)
                            .unwrap_or("unset")
                    )
                })
                .collect::<Vec<_>>();
            let found = if seen.is_empty() {
                "no Gateway server on 15443".to_string()
            } else {
                format!("15443 served by {} only", seen.join(", "))
            };
            out.push(
                Finding::fail(ID, format!("{found}: the gateway does not pass `*.global` TLS through to the service by SNI"))
                    .object(format!("Gateway {ns}/istio-multicluster-ingressgateway"))
                    .hint("install Istio with global.multiCluster.enabled=true (the gateways chart's istio-multicluster-ingressgateway: selector istio: ingressgateway, port 15443 TLS, tls.mode AUTO_PASSTHROUGH, hosts *.global)"),
            );
        }
    }
    // The SNI rewrite `.global` → `.svc.cluster.local` (preconfigured.yaml:186-218): without it
    // the gateway finds no cluster named after the `.global` host.
    if let Some(why) = snap
        .not_served
        .get(&Kind::EnvoyFilter)
        .or(snap.refused.get(&Kind::EnvoyFilter))
    {
        out.push(Finding::warn(
            ID,
            format!("cannot see the .global SNI rewrite EnvoyFilter: {why}"),
        ));
    } else if !snap.of(Kind::EnvoyFilter).iter().any(|f| {
        let spec = f.spec().to_string();
        spec.contains("tcp_cluster_rewrite") && spec.contains(".global")
    }) {
        out.push(
            Finding::fail(ID, "no EnvoyFilter rewrites .global SNI to .svc.cluster.local at the gateway (tcp_cluster_rewrite on 15443): it routes the VM's calls to no cluster")
                .object(format!("EnvoyFilter {ns}/istio-multicluster-ingressgateway"))
                .hint("install Istio with global.multiCluster.enabled=true (the gateways chart's istio-multicluster-ingressgateway EnvoyFilter)"),
        );
    }
    // The `*.global` ISTIO_MUTUAL rule (preconfigured.yaml:220-239).
    let mutual = snap.of(Kind::DestinationRule).iter().any(|dr| {
        let spec = dr.spec_as::<crate::doctor::mesh::specs::DestinationRuleSpec>();
        spec.host.as_deref() == Some("*.global")
            && spec
                .traffic_policy
                .and_then(|p| p.tls)
                .and_then(|t| t.mode)
                .as_deref()
                == Some("ISTIO_MUTUAL")
    });
    if !mutual {
        out.push(
            Finding::fail(ID, "no DestinationRule for *.global with tls.mode ISTIO_MUTUAL: the VM's sidecar sends .global calls without the mTLS the gateway passes through")
                .object(format!("DestinationRule {ns}/istio-multicluster-destinationrule"))
                .hint("install Istio with global.multiCluster.enabled=true (istio-multicluster-destinationrule: host *.global, trafficPolicy.tls.mode ISTIO_MUTUAL)"),
        );
    }
    or_pass(
        ID,
        out,
        format!(
            "{} .global service(s): unique addresses, endpoints at the gateway on 15443, AUTO_PASSTHROUGH, SNI rewrite and ISTIO_MUTUAL in place",
            globals.len()
        ),
    )
}

/// The IPs the cluster DNS forwards `global` to: kube-dns `stubDomains` (JSON) or a CoreDNS
/// `global:53` server block's `forward`/`proxy`, with the ConfigMap read.
fn dns_forwards(snap: &Snapshot) -> Vec<(&Obj, Vec<String>)> {
    let mut out = Vec::new();
    if let Some(cm) = snap.get(Kind::ConfigMap, "kube-system", "kube-dns")
        && let Some(text) = cm
            .data("stubDomains")
            .and_then(|b| String::from_utf8(b).ok())
        && let Ok(v) = serde_json::from_str::<Value>(&text)
        && let Some(ips) = v.get("global")
    {
        out.push((
            cm,
            strings(Some(ips))
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
        ));
    }
    if let Some(cm) = snap.get(Kind::ConfigMap, "kube-system", "coredns")
        && let Some(text) = cm.data("Corefile").and_then(|b| String::from_utf8(b).ok())
        && let Some(block) = corefile_global(&text)
    {
        out.push((cm, block));
    }
    out
}

/// The upstream IPs of a Corefile's `global:53 { … forward . IP … }` block.
fn corefile_global(text: &str) -> Option<Vec<String>> {
    let start = text.find("global:53")?;
    let body = &text[start..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    let ips = body
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("forward ") || l.starts_with("proxy "))
        .flat_map(|l| l.split_whitespace().skip(2))
        .map(|w| w.split(':').next().unwrap_or(w).to_string())
        .collect();
    Some(ips)
}

fn dns(snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
    let mut out = Vec::new();
    let forwards = dns_forwards(snap);
    if forwards.is_empty() {
        return out;
    }
    let coredns = snap.get(Kind::Service, &ctx.istio_ns, ISTIOCOREDNS);
    let ip = coredns
        .and_then(service_spec)
        .and_then(|s| s.cluster_ip.as_deref());
    for (cm, ips) in forwards {
        match ip {
            None => out.push(
                Finding::fail(ID, format!("the cluster DNS forwards global to {}, but there is no {ISTIOCOREDNS} Service in {}: .global names do not resolve in the cluster", ips.join(", "), ctx.istio_ns))
                    .on(cm)
                    .hint("install Istio with istiocoredns.enabled=true (1.4: the istiocoredns chart)"),
            ),
            Some(ip) if !ips.iter().any(|i| i == ip) => {
                let hint = if cm.name() == "kube-dns" {
                    let mut stubs: serde_json::Map<String, Value> = cm
                        .data("stubDomains")
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    stubs.insert("global".into(), serde_json::json!([ip]));
                    let patch = serde_json::json!({"data": {"stubDomains": Value::Object(stubs).to_string()}});
                    format!("`kubectl -n kube-system patch configmap kube-dns --type=merge -p {}`", patch_arg(&patch))
                } else {
                    let text = cm.data("Corefile").and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
                    let mut fixed = text.clone();
                    for old in &ips {
                        if let Some(at) = text.find("global:53") {
                            let tail = fixed[at..].replacen(old.as_str(), ip, 1);
                            fixed = format!("{}{tail}", &fixed[..at]);
                        }
                    }
                    let patch = serde_json::json!({"data": {"Corefile": fixed}});
                    format!("`kubectl -n kube-system patch configmap coredns --type=merge -p {}`", patch_arg(&patch))
                };
                out.push(
                    Finding::fail(ID, format!("the cluster DNS forwards global to {}, not to {ISTIOCOREDNS}'s ClusterIP {ip}: .global names do not resolve in the cluster", ips.join(", ")))
                        .on(cm)
                        .hint(hint),
                );
            }
            Some(_) => {}
        }
    }
    out
}

/// The Deployment behind the east-west gateway Service (its pod template matches the selector).
fn gateway_deployment<'a>(snap: &'a Snapshot, svc: &Obj) -> Option<&'a Obj> {
    let selector = borrowed(service_spec(svc).and_then(|s| s.selector.as_ref()));
    snap.of(Kind::Deployment).iter().find(|d| {
        let labels = d.template_labels();
        d.namespace() == svc.namespace()
            && !selector.is_empty()
            && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    })
}

/// The plain value of a container env var of a Deployment.
fn env_of<'a>(deploy: &'a Obj, name: &str) -> Option<&'a str> {
    deploy
        .template_containers()
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn modern(snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
    let ns = &ctx.istio_ns;
    let svc = gateway_service(snap, Era::Modern, ns);
    if svc.is_none() && !multi_network(snap, ctx) {
        return vec![Finding::pass(
            ID,
            "no .global services (modern) and a single network: VMs on the pod network call Services directly",
        )];
    }
    let Some(svc) = svc else {
        return vec![
            Finding::fail(ID, format!("multi-network mesh without an east-west gateway Service in {ns}: VMs on another network cannot call cluster Services"))
                .object(format!("Service {ns}/{}", Era::Modern.default_gateway_service()))
                .hint("install the east-west gateway (istio samples/multicluster/gen-eastwest-gateway.sh --network NETWORK) and apply samples/multicluster/expose-services.yaml"),
        ];
    };
    let mut out = Vec::new();
    // The sample gateway (istio 1.22.0 samples/multicluster/rendered/eastwest-gateway.network1.iop
    // .yaml:10-20): pods labelled istio=eastwestgateway and with the network, and
    // ISTIO_META_REQUESTED_NETWORK_VIEW naming it, so it forwards only to its own network.
    let network = svc.label(NETWORK_LABEL).map(str::to_string).or_else(|| {
        snap.get(Kind::Namespace, "", ns)
            .and_then(|n| n.label(NETWORK_LABEL).map(str::to_string))
    });
    if svc.label("istio") != Some("eastwestgateway") {
        out.push(
            Finding::warn(ID, "the east-west gateway Service is not labelled istio=eastwestgateway: Gateways of the samples (selector istio: eastwestgateway) may select other pods")
                .on(svc)
                .hint(format!("`kubectl -n {ns} label service {} istio=eastwestgateway --overwrite`", svc.name())),
        );
    }
    if let Some(deploy) = gateway_deployment(snap, svc) {
        let labels = deploy.template_labels();
        if !labels.contains_key(NETWORK_LABEL) {
            out.push(
                Finding::warn(ID, format!("the east-west gateway's pods lack {NETWORK_LABEL}: istiod does not know which network the gateway serves"))
                    .on(deploy)
                    .hint("set the label in the gateway's pod template (gen-eastwest-gateway.sh --network NETWORK does)"),
            );
        }
        match (env_of(deploy, "ISTIO_META_REQUESTED_NETWORK_VIEW"), network.as_deref()) {
            (None, _) => out.push(
                Finding::warn(ID, "the east-west gateway has no ISTIO_META_REQUESTED_NETWORK_VIEW: it may forward cross-network calls to endpoints on other networks it cannot reach")
                    .on(deploy)
                    .hint(format!("`kubectl -n {} set env deployment/{} ISTIO_META_REQUESTED_NETWORK_VIEW={}`", deploy.namespace(), deploy.name(), network.as_deref().unwrap_or("network1"))),
            ),
            (Some(view), Some(net)) if !view.split(',').any(|v| v.trim() == net) => out.push(
                Finding::warn(ID, format!("the east-west gateway's ISTIO_META_REQUESTED_NETWORK_VIEW is {view}, not its network {net}"))
                    .on(deploy)
                    .hint(format!("`kubectl -n {} set env deployment/{} ISTIO_META_REQUESTED_NETWORK_VIEW={net}`", deploy.namespace(), deploy.name())),
            ),
            _ => {}
        }
    }
    // cross-network-gateway (samples/multicluster/expose-services.yaml:1-16).
    let cross = gateway_servers(snap, PORT as u32)
        .into_iter()
        .any(|(g, s)| {
            binds(snap, g, svc)
                && s.pointer("/tls/mode").and_then(Value::as_str) == Some("AUTO_PASSTHROUGH")
                && strings(s.get("hosts"))
                    .iter()
                    .any(|h| matches!(*h, "*.local" | "*"))
        });
    if !cross {
        out.push(
            Finding::fail(ID, "no Gateway serves *.local on 15443 as AUTO_PASSTHROUGH on the east-west gateway: a VM on another network cannot call cluster Services")
                .object(format!("Gateway {ns}/cross-network-gateway"))
                .hint("apply Istio's samples/multicluster/expose-services.yaml in the Istio namespace (cross-network-gateway)"),
        );
    }
    if !service_ports(svc).contains(&(PORT as u32)) {
        out.push(
            Finding::fail(ID, "the east-west gateway Service does not expose 15443")
                .on(svc)
                .hint(format!(
                    "`kubectl -n {} patch service {} --type=json -p {}`",
                    svc.namespace(),
                    svc.name(),
                    patch_arg(&serde_json::json!([{"op": "add", "path": "/spec/ports/-", "value": {"name": "tls", "port": PORT, "targetPort": PORT}}]))
                )),
        );
    }
    or_pass(
        ID,
        out,
        format!(
            "east-west gateway {} serves *.local on 15443 (AUTO_PASSTHROUGH) for network {}",
            svc.ns_name(),
            network.as_deref().unwrap_or("(unnamed)")
        ),
    )
}

impl Check for NetworkGlobalServices {
    fn id(&self) -> &'static str {
        ID
    }

    fn describe(&self) -> &'static str {
        "legacy: a .global ServiceEntry shares an address, its endpoints are not the gateway's address on 15443, the gateway lacks 15443 AUTO_PASSTHROUGH for *.global, the SNI rewrite or the *.global ISTIO_MUTUAL rule, or the DNS stub for global misses istiocoredns; modern: the east-west gateway's labels, REQUESTED_NETWORK_VIEW or cross-network-gateway"
    }

    fn breaks(&self) -> Breaks {
        Breaks::Now
    }

    fn vm_scoped(&self) -> bool {
        true
    }

    fn run(&self, snap: &Snapshot, ctx: &CheckContext) -> Vec<Finding> {
        match ctx.era {
            Some(Era::Legacy) => legacy(snap, ctx),
            Some(Era::Modern) => modern(snap, ctx),
            None if snap.source == SourceKind::None => {
                vec![Finding::skip(ID, "no cluster or manifests given")]
            }
            None => vec![Finding::skip(
                ID,
                "era unknown: cannot tell which cross-network path VMs use",
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Severity::{Fail, Pass, Warn};
    use crate::doctor::testutil::{Fixture, expect, flagged};

    /// What Istio 1.4's gateways chart installs with global.multiCluster.enabled=true
    /// (preconfigured.yaml:155-239), and the ingress gateway's 15443 port.
    const MULTICLUSTER: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: istio-multicluster-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - hosts: ['*.global']
    port: {name: tls, number: 15443, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: istio-multicluster-ingressgateway, namespace: istio-system}
spec:
  workloadLabels: {istio: ingressgateway}
  filters:
  - listenerMatch: {portNumber: 15443, listenerType: GATEWAY}
    insertPosition: {index: AFTER, relativeTo: envoy.filters.network.sni_cluster}
    filterName: envoy.filters.network.tcp_cluster_rewrite
    filterType: NETWORK
    filterConfig: {cluster_pattern: "\\.global$", cluster_replacement: .svc.cluster.local}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: istio-multicluster-destinationrule, namespace: istio-system}
spec:
  host: '*.global'
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"#;

    /// A ServiceEntry as `prepare --expose httpbin.bar` writes it.
    fn exposed(svc: &str, address: &str, gateway: &str, port: u16) -> String {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {{name: {svc}-bar-global, namespace: expandvm, labels: {{app.kubernetes.io/managed-by: meshvm}}}}\nspec:\n  hosts: [{svc}.bar.global]\n  location: MESH_INTERNAL\n  resolution: DNS\n  addresses: [{address}]\n  ports: [{{name: http, number: 8000, protocol: http}}]\n  endpoints: [{{address: {gateway}, ports: {{http: {port}}}}}]\n"
        )
    }

    fn legacy_multicluster() -> Fixture {
        Fixture::legacy()
            .release(4)
            .snapshot_yaml_replace(
                "{name: http2, port: 80}]",
                "{name: http2, port: 80}, {name: tls, port: 15443, targetPort: 15443}]",
            )
            .with(MULTICLUSTER)
    }

    #[test]
    fn legacy_table() {
        let good =
            || legacy_multicluster().with(&exposed("httpbin", "127.255.0.2", "35.1.2.3", 15443));
        let cases = [
            ("no .global services", Fixture::legacy().release(4), Pass),
            ("good", good(), Pass),
            (
                "duplicate address",
                good().with(&exposed("sleep", "127.255.0.2", "35.1.2.3", 15443)),
                Fail,
            ),
            (
                "two services, own addresses",
                good().with(&exposed("sleep", "127.255.0.3", "35.1.2.3", 15443)),
                Pass,
            ),
            (
                "stale gateway IP",
                legacy_multicluster().with(&exposed("httpbin", "127.255.0.2", "35.9.9.9", 15443)),
                Fail,
            ),
            (
                "endpoint port not 15443",
                legacy_multicluster().with(&exposed("httpbin", "127.255.0.2", "35.1.2.3", 8000)),
                Fail,
            ),
            (
                "gateway Service lacks 15443",
                Fixture::legacy()
                    .release(4)
                    .with(MULTICLUSTER)
                    .with(&exposed("httpbin", "127.255.0.2", "35.1.2.3", 15443)),
                Fail,
            ),
            (
                "15443 not AUTO_PASSTHROUGH",
                good().snapshot_yaml_replace(
                    "tls: {mode: AUTO_PASSTHROUGH}",
                    "tls: {mode: PASSTHROUGH}",
                ),
                Fail,
            ),
            (
                "no SNI rewrite",
                good().snapshot_yaml_replace(
                    "envoy.filters.network.tcp_cluster_rewrite",
                    "envoy.filters.network.other",
                ),
                Fail,
            ),
            (
                "no *.global ISTIO_MUTUAL rule",
                good().snapshot_yaml_replace(
                    "trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}",
                    "trafficPolicy: {tls: {mode: DISABLE}}",
                ),
                Fail,
            ),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&NetworkGlobalServices), severity, case);
        }
        let out = Fixture::legacy().release(4).run(&NetworkGlobalServices);
        assert_eq!(out[0].message, "no .global services");

        let dup = good()
            .with(&exposed("sleep", "127.255.0.2", "35.1.2.3", 15443))
            .run(&NetworkGlobalServices);
        assert_eq!(
            flagged(&dup),
            [
                (Fail, "ServiceEntry expandvm/httpbin-bar-global".to_string()),
                (Fail, "ServiceEntry expandvm/sleep-bar-global".to_string())
            ]
        );
        let stale = legacy_multicluster()
            .with(&exposed("httpbin", "127.255.0.2", "35.9.9.9", 8000))
            .run(&NetworkGlobalServices);
        assert_eq!(stale.len(), 1, "{stale:#?}");
        assert!(
            stale[0]
                .message
                .contains("not the gateway's current address 35.1.2.3"),
            "{stale:#?}"
        );
        assert_eq!(
            stale[0].hint,
            r#"point it at the gateway: `kubectl -n expandvm patch serviceentry httpbin-bar-global --type=json -p '[{"op":"replace","path":"/spec/endpoints/0/address","value":"35.1.2.3"},{"op":"replace","path":"/spec/endpoints/0/ports/http","value":15443}]'`"#
        );
        let no_port = Fixture::legacy()
            .release(4)
            .with(MULTICLUSTER)
            .with(&exposed("httpbin", "127.255.0.2", "35.1.2.3", 15443))
            .run(&NetworkGlobalServices);
        assert!(no_port[0].hint.contains(r#"`kubectl -n istio-system patch service istio-ingressgateway --type=json -p '[{"op":"add","path":"/spec/ports/-","value":{"name":"tls","port":15443,"targetPort":15443}}]'`"#), "{no_port:#?}");
    }

    #[test]
    fn legacy_dns_stub_points_at_istiocoredns() {
        let coredns_svc = "apiVersion: v1\nkind: Service\nmetadata: {name: istiocoredns, namespace: istio-system}\nspec: {clusterIP: 10.96.0.53, ports: [{name: dns, port: 53, protocol: UDP}]}\n";
        let kube_dns = |ip: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kube-dns, namespace: kube-system}}\ndata:\n  stubDomains: '{{\"global\": [\"{ip}\"], \"corp\": [\"10.1.1.1\"]}}'\n"
            )
        };
        let corefile = |ip: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: coredns, namespace: kube-system}}\ndata:\n  Corefile: |\n    .:53 {{\n        forward . /etc/resolv.conf\n    }}\n    global:53 {{\n        errors\n        cache 30\n        forward . {ip}:53\n    }}\n"
            )
        };
        let base = || {
            legacy_multicluster()
                .with(&exposed("httpbin", "127.255.0.2", "35.1.2.3", 15443))
                .with(coredns_svc)
        };
        let cases = [
            (
                "kube-dns stub at istiocoredns",
                base().with(&kube_dns("10.96.0.53")),
                Pass,
            ),
            (
                "kube-dns stub elsewhere",
                base().with(&kube_dns("10.96.0.99")),
                Fail,
            ),
            (
                "coredns block at istiocoredns",
                base().with(&corefile("10.96.0.53")),
                Pass,
            ),
            (
                "coredns block elsewhere",
                base().with(&corefile("10.96.0.99")),
                Fail,
            ),
            (
                "stub but no istiocoredns",
                legacy_multicluster().with(&kube_dns("10.96.0.53")),
                Fail,
            ),
            ("no stub", base(), Pass),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&NetworkGlobalServices), severity, case);
        }
        let out = base()
            .with(&kube_dns("10.96.0.99"))
            .run(&NetworkGlobalServices);
        assert_eq!(out[0].object, "ConfigMap kube-system/kube-dns");
        assert_eq!(
            out[0].hint,
            r#"`kubectl -n kube-system patch configmap kube-dns --type=merge -p '{"data":{"stubDomains":"{\"corp\":[\"10.1.1.1\"],\"global\":[\"10.96.0.53\"]}"}}'`"#
        );
        let out = base()
            .with(&corefile("10.96.0.99"))
            .run(&NetworkGlobalServices);
        assert!(
            out[0].hint.contains(r"forward . 10.96.0.53:53") && !out[0].hint.contains("10.96.0.99"),
            "{out:#?}"
        );
    }

    #[test]
    fn modern_east_west_gateway() {
        let deploy = |labels: &str, env: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: istio-eastwestgateway, namespace: istio-system}}\nspec: {{template: {{metadata: {{labels: {{{labels}}}}}, spec: {{containers: [{{name: istio-proxy, env: [{env}]}}]}}}}}}\n"
            )
        };
        let ok_labels = "istio: eastwestgateway, topology.istio.io/network: network1";
        let view = "{name: ISTIO_META_REQUESTED_NETWORK_VIEW, value: network1}";
        let cases = [
            ("sample gateway", Fixture::modern().release(22).with(&deploy(ok_labels, view)), Pass),
            ("no network view", Fixture::modern().release(22).with(&deploy(ok_labels, "")), Warn),
            ("view of another network", Fixture::modern().release(22).with(&deploy(ok_labels, "{name: ISTIO_META_REQUESTED_NETWORK_VIEW, value: network2}")), Warn),
            ("pods lack the network label", Fixture::modern().release(22).with(&deploy("istio: eastwestgateway", view)), Warn),
            ("no cross-network-gateway", Fixture::modern().release(22).with(&deploy(ok_labels, view)).snapshot_yaml_replace("hosts: ['*.local']", "hosts: ['*.example.com']"), Fail),
            ("cross-network-gateway not AUTO_PASSTHROUGH", Fixture::modern().release(22).with(&deploy(ok_labels, view)).snapshot_yaml_replace("tls: {mode: AUTO_PASSTHROUGH}", "tls: {mode: ISTIO_MUTUAL}"), Fail),
            ("single network, no east-west gateway", Fixture::empty().with("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\n"), Pass),
        ];
        for (case, fixture, severity) in cases {
            expect(&fixture.run(&NetworkGlobalServices), severity, case);
        }
        let out = Fixture::modern()
            .release(22)
            .with(&deploy(ok_labels, ""))
            .run(&NetworkGlobalServices);
        assert_eq!(
            out[0].hint,
            "`kubectl -n istio-system set env deployment/istio-eastwestgateway ISTIO_META_REQUESTED_NETWORK_VIEW=network1`"
        );
    }
}
