//! `prepare --expose SVC.NS`: the cluster Services a VM on another network calls.
//!
//! Legacy (Istio 1.4): one ServiceEntry per Service, in the VM's namespace, for the host
//! `<svc>.<ns>.global`, shaped as the 1.4 multi-network VM guide writes it
//! (istio/istio.io@0567c2b10dbb2bc350b6fcecd78ccb70b2b15fe5
//! content/en/docs/examples/virtual-machines/multi-network/index.md, "Expose service running on
//! cluster to VMs": `hosts: [httpbin.bar.global]`, `location: MESH_INTERNAL`, `resolution: DNS`,
//! a unique `addresses` entry from 127.255.0.0/16, `endpoints: [{address: <gateway>, ports:
//! {<port name>: 15443}}]`). The VM resolves the name through `/etc/hosts`, which `bundle` writes
//! from these entries ([`global_hosts`]). The gateway's 15443 is the `istio-multicluster-ingressgateway`
//! Gateway (`*.global`, TLS AUTO_PASSTHROUGH) and its `.global` → `.svc.cluster.local` SNI rewrite
//! (istio/istio@1.4.2 install/kubernetes/helm/istio/charts/gateways/templates/preconfigured.yaml:155-240,
//! with the `*.global` ISTIO_MUTUAL DestinationRule).
//!
//! Modern: the east-west gateway's `cross-network-gateway` (15443, AUTO_PASSTHROUGH, `*.local`:
//! istio/istio@1.22.0 samples/multicluster/expose-services.yaml) carries every Service; prepare
//! only checks that it exists ([`cross_network_problem`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::errors::UsageError;
use crate::global::strings;
pub use crate::global::{GLOBAL_SUFFIX, global_hosts, in_global_range, is_ours};
use crate::istio::MULTI_NETWORK_PORT;

/// The name of the modern cross-network Gateway (istio/istio@1.22.0
/// samples/multicluster/expose-services.yaml:4).
pub const CROSS_NETWORK_GATEWAY: &str = "cross-network-gateway";
/// The label value of the modern east-west gateway's `istio` label (expose-services.yaml:7).
pub const EASTWEST_LABEL: &str = "eastwestgateway";
/// One `--expose` item: a cluster Service the VM calls.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Exposed {
    /// The Service's name.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
}

impl Exposed {
    /// Parse `SVC.NS`; both parts DNS-1123 labels.
    pub fn parse(item: &str) -> Result<Self, UsageError> {
        let bad = |why: String| {
            UsageError::new(
                format!("--expose {item:?}: {why}"),
                Some("write each as SVC.NS, e.g. --expose httpbin.bar,ratings.default"),
            )
        };
        let Some((service, namespace)) = item.split_once('.') else {
            return Err(bad("not SVC.NS (no dot)".into()));
        };
        for (what, part) in [("service", service), ("namespace", namespace)] {
            crate::names::dns1123_label(part)
                .map_err(|e| bad(format!("the {what} {part:?} is not a valid name: {e}")))?;
        }
        Ok(Self {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
        })
    }

    /// `<svc>.<ns>.global`.
    pub fn host(&self) -> String {
        format!("{}.{}.{GLOBAL_SUFFIX}", self.service, self.namespace)
    }

    /// The ServiceEntry's name: `<svc>-<ns>-global`.
    pub fn entry_name(&self) -> String {
        format!("{}-{}-{GLOBAL_SUFFIX}", self.service, self.namespace)
    }
}

impl std::fmt::Display for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.service, self.namespace)
    }
}

/// Every `--expose` item, deduplicated, in order.
pub fn parse_all(items: &[String]) -> Result<Vec<Exposed>, UsageError> {
    let mut out: Vec<Exposed> = Vec::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let e = Exposed::parse(item)?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// The address a meshvm `.global` ServiceEntry for `host` holds, if one of `entries` (the VM
/// namespace's) does.
pub fn address_of(entries: &[DynamicObject], host: &str) -> Option<Ipv4Addr> {
    entries
        .iter()
        .filter(|e| is_ours(e) && strings(e, "/spec/hosts").iter().any(|h| h == host))
        .flat_map(|e| strings(e, "/spec/addresses"))
        .find_map(|a| a.parse().ok().filter(|ip| in_global_range(*ip)))
}

/// Every address every ServiceEntry holds (`spec.addresses`, bare IPs and CIDRs' base
/// addresses), with the `namespace/name` holding it.
pub fn addresses_in_use(entries: &[DynamicObject]) -> BTreeMap<Ipv4Addr, Vec<String>> {
    let mut out: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    for e in entries {
        let who = format!(
            "{}/{}",
            e.metadata.namespace.as_deref().unwrap_or_default(),
            e.metadata.name.as_deref().unwrap_or_default()
        );
        for a in strings(e, "/spec/addresses") {
            let base = a.split('/').next().unwrap_or_default();
            if let Ok(ip) = base.parse() {
                out.entry(ip).or_default().push(who.clone());
            }
        }
    }
    out
}

/// `namespace/name` of a ServiceEntry.
fn who(e: &DynamicObject) -> String {
    format!(
        "{}/{}",
        e.metadata.namespace.as_deref().unwrap_or_default(),
        e.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The entries holding `ip` (a bare address or a CIDR's base address in `spec.addresses`).
fn holders(entries: &[DynamicObject], ip: Ipv4Addr) -> impl Iterator<Item = &DynamicObject> {
    entries.iter().filter(move |e| {
        strings(e, "/spec/addresses")
            .iter()
            .any(|a| a.split('/').next().and_then(|b| b.parse().ok()) == Some(ip))
    })
}

/// Whether `me` (`namespace/name`) holds `ip` first among `entries`: it is the oldest holder by
/// `creationTimestamp`, then by `namespace/name`. An entry created in a later second was stored
/// after the older one, so the run that wrote it sees the older one when it reads again and
/// moves; within one second (the apiserver stamps whole seconds) see [`tied`].
pub fn holds_first(entries: &[DynamicObject], me: &str, ip: Ipv4Addr) -> bool {
    let key = |e: &DynamicObject| (e.metadata.creation_timestamp.as_ref().map(|t| t.0), who(e));
    holders(entries, ip)
        .min_by_key(|e| key(e))
        .is_none_or(|first| who(first) == me)
}

/// The other holders of `ip` created in the same second as `me`: which of the two was stored
/// first cannot be told, and the run that wrote the other may not have seen `me` when it read
/// again, so a tie that lasts is broken by `me` moving (`prepare`'s settle step).
pub fn tied(entries: &[DynamicObject], me: &str, ip: Ipv4Addr) -> Vec<String> {
    let created = |e: &DynamicObject| e.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let Some(mine) = holders(entries, ip).find(|e| who(e) == me) else {
        return Vec::new();
    };
    holders(entries, ip)
        .filter(|e| who(e) != me && created(e) == created(mine))
        .map(who)
        .collect()
}

/// FNV-1a, 32 bits: a hash that stays the same across builds and platforms.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A 127.255.x.y address for `host`, free in `taken`: the first free one from a hash of the host
/// on, skipping 127.255.0.0 and 127.255.255.255; `None` when all 65534 are taken.
pub fn allocate(host: &str, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let start = fnv1a(host) % 65_536;
    (0..65_536_u32)
        .map(|i| (start + i) % 65_536)
        .filter(|n| *n != 0 && *n != 65_535)
        .map(|n| {
            let [_, _, x, y] = n.to_be_bytes();
            Ipv4Addr::new(127, 255, x, y)
        })
        .find(|ip| !taken.contains(ip))
}

/// The Istio protocol of a Service port, as Istio 1.4 reads it from the port's name prefix
/// (istio/istio@1.4.2 pkg/config/kube/conversion.go:57-81 `ConvertProtocol`, names from
/// pkg/config/protocol/instance.go:54-80 `Parse`); a name Istio does not know is plain TCP here.
/// `None` for UDP, which the sidecar does not proxy.
pub fn port_protocol(name: &str, k8s_protocol: Option<&str>) -> Option<&'static str> {
    if k8s_protocol.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("grpc-web") {
        return Some("GRPC-Web");
    }
    let prefix = lower.split('-').next().unwrap_or_default();
    Some(match prefix {
        "grpc" => "GRPC",
        "http" => "HTTP",
        "http2" => "HTTP2",
        "https" => "HTTPS",
        "tls" => "TLS",
        "mongo" => "Mongo",
        "redis" => "Redis",
        "mysql" => "MySQL",
        _ => "TCP",
    })
}

/// The ServiceEntry's ports: one per TCP port of the Service, named as the Service names it
/// (else `tcp-<port>`), at the Service's port number.
pub fn entry_ports(service: &Service) -> Vec<Value> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| {
            let given = p.name.clone().filter(|n| !n.is_empty());
            let protocol = port_protocol(given.as_deref().unwrap_or(""), p.protocol.as_deref())?;
            let name = given.unwrap_or_else(|| format!("tcp-{}", p.port));
            Some(json!({"name": name, "number": p.port, "protocol": protocol}))
        })
        .collect()
}

/// The `.global` ServiceEntry for `exposed`, at `api_version`, in the VM's namespace.
pub fn service_entry_object(
    api_version: &str,
    vm_namespace: &str,
    exposed: &Exposed,
    ports: &[Value],
    address: Ipv4Addr,
    gateway: IpAddr,
) -> Value {
    let endpoint_ports: serde_json::Map<String, Value> = ports
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .map(|n| (n.to_owned(), json!(MULTI_NETWORK_PORT)))
        .collect();
    json!({
        "apiVersion": api_version,
        "kind": "ServiceEntry",
        "metadata": {
            "name": exposed.entry_name(),
            "namespace": vm_namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        },
        "spec": {
            "hosts": [exposed.host()],
            "location": "MESH_INTERNAL",
            "resolution": "DNS",
            "addresses": [address.to_string()],
            "ports": ports,
            "endpoints": [{"address": gateway.to_string(), "ports": endpoint_ports}],
        },
    })
}

/// Modern: what is missing of the cross-network path, `None` when the east-west gateway Service
/// exists and `cross-network-gateway` serves 15443 as TLS AUTO_PASSTHROUGH for `*.local`.
pub fn cross_network_problem(
    istio_namespace: &str,
    eastwest_services: usize,
    gateway: Option<&DynamicObject>,
) -> Option<String> {
    if eastwest_services == 0 {
        return Some(format!(
            "no east-west gateway: no Service labelled istio={EASTWEST_LABEL} in namespace {istio_namespace}"
        ));
    }
    let Some(gateway) = gateway else {
        return Some(format!(
            "no Gateway {istio_namespace}/{CROSS_NETWORK_GATEWAY}"
        ));
    };
    let servers = gateway
        .data
        .pointer("/spec/servers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let ok = servers.iter().any(|s| {
        s.pointer("/port/number").and_then(Value::as_u64) == Some(u64::from(MULTI_NETWORK_PORT))
            && s.pointer("/tls/mode").and_then(Value::as_str) == Some("AUTO_PASSTHROUGH")
            && s.get("hosts")
                .and_then(Value::as_array)
                .is_some_and(|h| h.iter().any(|h| h == "*.local" || h == "*"))
    });
    (!ok).then(|| {
        format!(
            "Gateway {istio_namespace}/{CROSS_NETWORK_GATEWAY} has no server on {MULTI_NETWORK_PORT} with tls.mode AUTO_PASSTHROUGH for *.local"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: &str, name: &str, ours: bool, spec: &Value) -> DynamicObject {
        let mut v = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": ns}, "spec": spec});
        if ours {
            v["metadata"]["labels"] = json!({MANAGED_BY_LABEL: MANAGED_BY_VALUE});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn items_parse_as_svc_dot_ns() {
        let e = Exposed::parse("httpbin.bar").unwrap();
        assert_eq!(e.host(), "httpbin.bar.global");
        assert_eq!(e.entry_name(), "httpbin-bar-global");
        for bad in ["httpbin", "Httpbin.bar", "a.b.c", ".bar", "httpbin."] {
            let err = Exposed::parse(bad).unwrap_err();
            assert!(err.message.contains("--expose"), "{bad}: {err}");
        }
        let all = parse_all(&["a.x".into(), "b.y".into(), "a.x".into()]).unwrap();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn allocation_is_deterministic_in_range_and_skips_taken() {
        let none = BTreeSet::new();
        let a = allocate("httpbin.bar.global", &none).unwrap();
        assert_eq!(a, allocate("httpbin.bar.global", &none).unwrap());
        assert!(in_global_range(a));
        let taken: BTreeSet<_> = [a].into();
        let b = allocate("httpbin.bar.global", &taken).unwrap();
        assert_ne!(a, b);
        assert!(in_global_range(b));
        assert_ne!(
            allocate("ratings.default.global", &none),
            Some(Ipv4Addr::new(127, 255, 0, 0))
        );
    }

    #[test]
    fn protocols_follow_istio_port_names() {
        assert_eq!(port_protocol("http-web", Some("TCP")), Some("HTTP"));
        assert_eq!(port_protocol("grpc-web-x", None), Some("GRPC-Web"));
        assert_eq!(port_protocol("8000-80", Some("TCP")), Some("TCP"));
        assert_eq!(port_protocol("dns", Some("UDP")), None);
        assert_eq!(port_protocol("HTTP2", None), Some("HTTP2"));
    }

    #[test]
    fn entry_has_the_guides_shape() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "httpbin", "namespace": "bar"},
            "spec": {"ports": [{"name": "http", "port": 8000, "protocol": "TCP"}, {"port": 9000}]}}))
        .unwrap();
        let ports = entry_ports(&svc);
        let obj = service_entry_object(
            "networking.istio.io/v1alpha3",
            "expandvm",
            &Exposed::parse("httpbin.bar").unwrap(),
            &ports,
            Ipv4Addr::new(127, 255, 0, 3),
            "35.1.2.3".parse().unwrap(),
        );
        assert_eq!(
            obj["spec"],
            json!({"hosts": ["httpbin.bar.global"], "location": "MESH_INTERNAL", "resolution": "DNS",
                "addresses": ["127.255.0.3"],
                "ports": [{"name": "http", "number": 8000, "protocol": "HTTP"},
                          {"name": "tcp-9000", "number": 9000, "protocol": "TCP"}],
                "endpoints": [{"address": "35.1.2.3", "ports": {"http": 15443, "tcp-9000": 15443}}]})
        );
        assert_eq!(
            obj["metadata"]["labels"][MANAGED_BY_LABEL],
            MANAGED_BY_VALUE
        );
    }

    #[test]
    fn hosts_lines_and_addresses_come_from_our_entries() {
        let spec = |host: &str, ip: &str| json!({"hosts": [host], "addresses": [ip]});
        let entries = [
            entry("vm", "b", true, &spec("zeta.z.global", "127.255.9.9")),
            entry("vm", "a", true, &spec("httpbin.bar.global", "127.255.0.3")),
            entry("vm", "x", false, &spec("other.o.global", "127.255.1.1")),
        ];
        assert_eq!(
            global_hosts(&entries),
            "127.255.0.3 httpbin.bar.global\n127.255.9.9 zeta.z.global\n"
        );
        assert_eq!(
            address_of(&entries, "httpbin.bar.global"),
            Some(Ipv4Addr::new(127, 255, 0, 3))
        );
        assert_eq!(address_of(&entries, "other.o.global"), None);
        let used = addresses_in_use(&entries);
        assert_eq!(
            used[&Ipv4Addr::new(127, 255, 1, 1)],
            vec!["vm/x".to_owned()]
        );
    }

    #[test]
    fn the_cross_network_check_wants_the_samples_gateway() {
        let gw = |servers: Value| -> DynamicObject {
            serde_json::from_value(
                json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
                "metadata": {"name": CROSS_NETWORK_GATEWAY, "namespace": "istio-system"},
                "spec": {"selector": {"istio": EASTWEST_LABEL}, "servers": servers}}),
            )
            .unwrap()
        };
        let good = gw(
            json!([{"port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]}]),
        );
        assert_eq!(cross_network_problem("istio-system", 1, Some(&good)), None);
        assert!(
            cross_network_problem("istio-system", 0, Some(&good))
                .unwrap()
                .contains("istio=eastwestgateway")
        );
        assert!(
            cross_network_problem("istio-system", 1, None)
                .unwrap()
                .contains("no Gateway")
        );
        let simple = gw(
            json!([{"port": {"number": 15443}, "tls": {"mode": "SIMPLE"}, "hosts": ["*.local"]}]),
        );
        assert!(cross_network_problem("istio-system", 1, Some(&simple)).is_some());
    }
}
