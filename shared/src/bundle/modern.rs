//! Modern-era files (`cluster.env`, `mesh.yaml`, `hosts`) with the content `istioctl x workload entry configure` writes.
//!
//! Pure: everything comes in as plain values. The rules follow istioctl's `createMeshConfig`,
//! `createClusterEnv` and `createHosts`; where Go leaves an order to chance (map iteration over
//! the WorkloadGroup's ports) we sort by port name.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::goyaml;

/// The annotation istiod and istioctl read a per-workload ProxyConfig from.
pub const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";
/// The port istiod serves xDS and the CA on.
pub const ISTIOD_PORT: u16 = 15012;

/// What istioctl reads from a WorkloadGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadGroup {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.annotations` of the object itself.
    pub annotations: BTreeMap<String, String>,
    /// `spec.metadata.annotations`.
    pub spec_annotations: BTreeMap<String, String>,
    /// `spec.metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.template.labels` (istioctl lets them override the metadata labels).
    pub template_labels: BTreeMap<String, String>,
    /// `spec.template.serviceAccount`, `default` when empty (as istioctl).
    pub service_account: String,
    /// `spec.template.network`.
    pub network: String,
    /// `spec.template.ports`: name → port.
    pub ports: BTreeMap<String, u32>,
    /// `spec.probe`, the VM's readiness probe.
    pub probe: Option<Value>,
}

fn string_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} is not a map"))?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(format!("{what}.{k} is {other}, not a string")),
        })
        .collect()
}

impl WorkloadGroup {
    /// Read the fields istioctl uses from a WorkloadGroup object (as the API server returns it).
    pub fn from_object(obj: &Value) -> Result<Self, String> {
        let meta = obj.get("metadata");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        let spec = obj.get("spec");
        let template = spec.and_then(|s| s.get("template"));
        let mut ports = BTreeMap::new();
        if let Some(p) = template
            .and_then(|t| t.get("ports"))
            .filter(|p| !p.is_null())
        {
            let p = p
                .as_object()
                .ok_or("spec.template.ports is not a map of name to port")?;
            for (name, port) in p {
                let port = port
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("spec.template.ports.{name} is not a port number"))?;
                ports.insert(name.clone(), port);
            }
        }
        let mut service_account = text(template.and_then(|t| t.get("serviceAccount")));
        if service_account.is_empty() {
            "default".clone_into(&mut service_account);
        }
        Ok(Self {
            name: text(meta.and_then(|m| m.get("name"))),
            namespace: text(meta.and_then(|m| m.get("namespace"))),
            annotations: string_map(
                meta.and_then(|m| m.get("annotations")),
                "metadata.annotations",
            )?,
            spec_annotations: string_map(
                spec.and_then(|s| s.get("metadata"))
                    .and_then(|m| m.get("annotations")),
                "spec.metadata.annotations",
            )?,
            labels: string_map(
                spec.and_then(|s| s.get("metadata"))
                    .and_then(|m| m.get("labels")),
                "spec.metadata.labels",
            )?,
            template_labels: string_map(
                template.and_then(|t| t.get("labels")),
                "spec.template.labels",
            )?,
            service_account,
            network: text(template.and_then(|t| t.get("network"))),
            ports,
            probe: spec
                .and_then(|s| s.get("probe"))
                .filter(|p| !p.is_null())
                .cloned(),
        })
    }
}

/// Everything the modern files depend on.
#[derive(Debug, Clone)]
pub struct ModernInputs<'a> {
    /// The VM's WorkloadGroup.
    pub group: &'a WorkloadGroup,
    /// The `mesh` key of the `istio[-<rev>]` ConfigMap (MeshConfig YAML).
    pub mesh_config: &'a str,
    /// The Istio namespace.
    pub istio_namespace: &'a str,
    /// The control-plane revision; `None` for the default one.
    pub revision: Option<&'a str>,
    /// `ISTIO_META_CLUSTER_ID`.
    pub cluster_id: &'a str,
    /// `ISTIO_SVC_IP`, the VM's own address.
    pub internal_ip: Option<IpAddr>,
    /// The gateway the VM reaches istiod through; `None` writes an empty `hosts`.
    pub gateway_ip: Option<IpAddr>,
    /// `ISTIO_SERVICE_CIDR` (istioctl: `*`).
    pub service_cidr: &'a str,
    /// `ISTIO_INBOUND_PORTS` override; `None` takes the WorkloadGroup's ports (or `*`).
    pub inbound_ports: Option<&'a [u16]>,
}

/// The three generated text files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModernFiles {
    /// `cluster.env`.
    pub cluster_env: String,
    /// `mesh.yaml` (installed as `/etc/istio/config/mesh`).
    pub mesh_yaml: String,
    /// `hosts` (appended to `/etc/hosts`).
    pub hosts: String,
}

/// `istiod[-<rev>].<ns>.svc`.
pub fn istiod_host(istio_namespace: &str, revision: Option<&str>) -> String {
    match revision {
        Some(rev) => format!("istiod-{rev}.{istio_namespace}.svc"),
        None => format!("istiod.{istio_namespace}.svc"),
    }
}

/// `istiod[-<rev>].<ns>.svc:15012`.
pub fn istiod_addr(istio_namespace: &str, revision: Option<&str>) -> String {
    format!("{}:{ISTIOD_PORT}", istiod_host(istio_namespace, revision))
}

/// The ConfigMap holding the mesh config for a revision.
pub fn mesh_configmap(revision: Option<&str>) -> String {
    revision.map_or_else(|| "istio".to_owned(), |rev| format!("istio-{rev}"))
}

/// The sidecar-injector ConfigMap for a revision (its `values` hold the cluster name).
pub fn injector_configmap(revision: Option<&str>) -> String {
    revision.map_or_else(
        || "istio-sidecar-injector".to_owned(),
        |rev| format!("istio-sidecar-injector-{rev}"),
    )
}

/// `values.global.multiCluster.clusterName` from the injector ConfigMap's `values` JSON.
pub fn cluster_name_from_injector_values(values: &str) -> Result<Option<String>, String> {
    let v: Value =
        serde_json::from_str(values).map_err(|e| format!("its `values` key is not JSON: {e}"))?;
    Ok(v.pointer("/global/multiCluster/clusterName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// Parse a YAML mapping (MeshConfig or a ProxyConfig annotation) into JSON; empty text is `{}`.
fn parse_mapping(text: &str, what: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("{what} is not YAML: {e}"))?;
    match v {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        other => Err(format!("{what} is {other}, not a mapping")),
    }
}

/// protojson accepts `snake_case` field names and writes `lowerCamelCase`.
fn camel(key: &str) -> String {
    if !key.contains('_') || key.chars().any(|c| c.is_ascii_uppercase()) {
        return key.to_owned();
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// ProxyConfig fields that are maps of user data: their keys are kept as written.
const MAP_FIELDS: [&str; 2] = ["proxyMetadata", "runtimeValues"];

/// Field names as protojson writes them; `null`s dropped (protojson never writes them).
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let k = camel(&k);
                    let v = if MAP_FIELDS.contains(&k.as_str()) {
                        v
                    } else {
                        normalize(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn metadata_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, String> {
    string_map(v, what)
}

/// Istio's canonical service name and revision for a set of labels.
pub fn canonical_service(labels: &BTreeMap<String, String>, workload: &str) -> (String, String) {
    let first = |keys: [&str; 3]| keys.iter().find_map(|k| labels.get(*k)).cloned();
    let name = first([
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| workload.to_owned());
    let revision = first([
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".to_owned());
    (name, revision)
}

/// A string as Go's `encoding/json` writes it (HTML-safe escapes included).
pub fn go_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn go_json_labels(labels: &BTreeMap<String, String>) -> String {
    let body: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}:{}", go_json_string(k), go_json_string(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Istio's `shellescape.Quote` as of the goldens: everything but `w` and `@%+=:,./-` is
/// "unsafe" (a raw-string regex quirk), so nearly every value ends up single-quoted.
/// One knowing difference: istioctl also leaves `\` bare, which `sh` (that sources cluster.env)
/// reads as an escape or a line continuation; we quote it, so the value arrives intact.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| matches!(c, 'w' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-');
    if s.is_empty() {
        return "''".to_owned();
    }
    if s.chars().all(safe) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

fn status_port(config: &Map<String, Value>) -> Option<u64> {
    match config.get("statusPort")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Render the three files. Errors name the input that is malformed.
pub fn render(inputs: &ModernInputs<'_>) -> Result<ModernFiles, String> {
    let group = inputs.group;
    let mesh = parse_mapping(inputs.mesh_config, "the mesh config")?;
    let trust_domain = mesh
        .get("trustDomain")
        .or_else(|| mesh.get("trust_domain"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut config = match mesh
        .get("defaultConfig")
        .or_else(|| mesh.get("default_config"))
        .cloned()
        .map(normalize)
    {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "the mesh config's defaultConfig is {other}, not a mapping"
            ));
        }
    };
    let mut metadata = metadata_map(
        config.remove("proxyMetadata").as_ref(),
        "the mesh config's defaultConfig.proxyMetadata",
    )?;
    let discovery_empty = config
        .get("discoveryAddress")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if inputs.revision.is_some() && discovery_empty {
        config.insert(
            "discoveryAddress".into(),
            json!(istiod_addr(inputs.istio_namespace, inputs.revision)),
        );
    }
    // The WorkloadGroup's own annotation first, then its template's: later ones win, and
    // proxyMetadata merges key by key (as istioctl does), other fields are replaced.
    for annotations in [&group.annotations, &group.spec_annotations] {
        if let Some(text) = annotations.get(PROXY_CONFIG_ANNOTATION) {
            let what = format!("the WorkloadGroup's {PROXY_CONFIG_ANNOTATION} annotation");
            let overlay = match normalize(Value::Object(parse_mapping(text, &what)?)) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            for (key, value) in overlay {
                if key == "proxyMetadata" {
                    metadata.extend(metadata_map(
                        Some(&value),
                        &format!("{what} proxyMetadata"),
                    )?);
                } else {
                    config.insert(key, value);
                }
            }
        }
    }
    config.remove("readinessProbe");
    if let Some(probe) = &group.probe {
        config.insert("readinessProbe".into(), normalize(probe.clone()));
    }

    let mut labels = group.labels.clone();
    labels.extend(group.template_labels.clone());
    let (canonical_name, canonical_revision) = canonical_service(&labels, &group.name);
    let mesh_id = config
        .get("meshId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    metadata.insert("CANONICAL_SERVICE".into(), canonical_name.clone());
    metadata.insert("CANONICAL_REVISION".into(), canonical_revision.clone());
    metadata.insert("POD_NAMESPACE".into(), group.namespace.clone());
    metadata.insert("SERVICE_ACCOUNT".into(), group.service_account.clone());
    metadata.insert("TRUST_DOMAIN".into(), trust_domain);
    metadata.insert("ISTIO_META_CLUSTER_ID".into(), inputs.cluster_id.to_owned());
    metadata.insert("ISTIO_META_MESH_ID".into(), mesh_id);
    metadata.insert("ISTIO_META_NETWORK".into(), group.network.clone());
    if !group.ports.is_empty() {
        let ports: Vec<String> = group
            .ports
            .iter()
            .map(|(name, port)| {
                format!(
                    "{{\"name\":{},\"containerPort\":{port},\"protocol\":\"\"}}",
                    go_json_string(name)
                )
            })
            .collect();
        metadata.insert(
            "ISTIO_META_POD_PORTS".into(),
            format!("[{}]", ports.join(",")),
        );
    }
    metadata.insert("ISTIO_META_WORKLOAD_NAME".into(), group.name.clone());
    labels.insert("service.istio.io/canonical-name".into(), canonical_name);
    labels.insert(
        "service.istio.io/canonical-revision".into(),
        canonical_revision,
    );
    metadata.insert("ISTIO_METAJSON_LABELS".into(), go_json_labels(&labels));
    // `istioctl x workload entry configure --capture-dns` defaults to true and then sets
    // ISTIO_META_DNS_CAPTURE=true in the proxy metadata, which cluster.env carries too
    // (istio/istio@1.22.0 istioctl/pkg/workload/workload.go:270, 507-509): the VM's DNS proxy
    // resolves cluster Services, which the east-west gateway's 15443 then carries.
    metadata.insert("ISTIO_META_DNS_CAPTURE".into(), "true".into());

    config.insert(
        "proxyMetadata".into(),
        Value::Object(
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
        ),
    );
    let mesh_yaml = goyaml::to_string(&json!({ "defaultConfig": config }));

    // cluster.env: the proxy metadata plus the overrides istioctl sets.
    let inbound = match inputs.inbound_ports {
        Some(ports) if !ports.is_empty() => join(ports.iter()),
        _ if !group.ports.is_empty() => join(group.ports.values()),
        _ => "*".to_owned(),
    };
    let mut exclude = "22,15090,15021".to_owned();
    match status_port(&config) {
        Some(15090 | 15021) => {}
        Some(port) if port != 0 => {
            let _ = write!(exclude, ",{port}");
        }
        _ => exclude.push_str(",15020"),
    }
    let mut env = metadata;
    env.insert("ISTIO_INBOUND_PORTS".into(), inbound);
    env.insert("ISTIO_NAMESPACE".into(), group.namespace.clone());
    env.insert(
        "ISTIO_SERVICE".into(),
        format!("{}.{}", group.name, group.namespace),
    );
    env.insert("ISTIO_SERVICE_CIDR".into(), inputs.service_cidr.to_owned());
    env.insert("ISTIO_LOCAL_EXCLUDE_PORTS".into(), exclude);
    env.insert("SERVICE_ACCOUNT".into(), group.service_account.clone());
    if inputs.revision.is_some() {
        env.insert(
            "CA_ADDR".into(),
            istiod_addr(inputs.istio_namespace, inputs.revision),
        );
    }
    if let Some(ip) = inputs.internal_ip {
        env.insert("ISTIO_SVC_IP".into(), ip.to_string());
    }
    let mut lines: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{k}={}", shell_quote(v)))
        .collect();
    // istioctl sorts whole `KEY=value` lines, so `ISTIO_METAJSON…` precedes `ISTIO_META_…`.
    lines.sort();
    let mut cluster_env = lines.join("\n");
    cluster_env.push('\n');

    let hosts = inputs.gateway_ip.map_or_else(String::new, |ip| {
        format!(
            "{ip} {}\n",
            istiod_host(inputs.istio_namespace, inputs.revision)
        )
    });
    Ok(ModernFiles {
        cluster_env,
        mesh_yaml,
        hosts,
    })
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|p| p.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(yaml: &str) -> WorkloadGroup {
        let v: Value = serde_saphyr::from_str(yaml).unwrap();
        WorkloadGroup::from_object(&v).unwrap()
    }

    #[test]
    fn shell_quote_matches_istio() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("latest"), "'latest'");
        assert_eq!(shell_quote("10.0.0.1"), "'10.0.0.1'");
        assert_eq!(shell_quote("www"), "www");
        assert_eq!(shell_quote("it's"), "'it'\"'\"'s'");
        assert_eq!(
            shell_quote("\\"),
            "'\\'",
            "a backslash is quoted, unlike istioctl"
        );
    }

    #[test]
    fn canonical_labels_follow_istio_precedence() {
        let mut l = BTreeMap::new();
        assert_eq!(canonical_service(&l, "wl"), ("wl".into(), "latest".into()));
        l.insert("app".into(), "a".into());
        l.insert("version".into(), "v1".into());
        assert_eq!(canonical_service(&l, "wl"), ("a".into(), "v1".into()));
        l.insert("app.kubernetes.io/name".into(), "k".into());
        assert_eq!(canonical_service(&l, "wl").0, "k");
    }

    #[test]
    fn go_json_escapes_html() {
        assert_eq!(
            go_json_string("a<b>&\"c"),
            "\"a\\u003cb\\u003e\\u0026\\\"c\""
        );
    }

    #[test]
    fn ports_network_and_status_port_flow_into_both_files() {
        let g = group(
            "metadata: {name: vm, namespace: ns}\nspec:\n  metadata:\n    labels: {app: web, version: v2}\n  template:\n    serviceAccount: sa\n    network: net-1\n    ports: {http: 8080, grpc: 9090}\n",
        );
        let files = render(&ModernInputs {
            group: &g,
            mesh_config: "trustDomain: example.org\ndefaultConfig:\n  statusPort: 15999\n  mesh_id: m1\n",
            istio_namespace: "istio-system",
            revision: None,
            cluster_id: "c1",
            internal_ip: None,
            gateway_ip: Some("192.0.2.1".parse().unwrap()),
            service_cidr: "*",
            inbound_ports: None,
        })
        .unwrap();
        let env = &files.cluster_env;
        assert!(env.contains("ISTIO_INBOUND_PORTS='9090,8080'\n"), "{env}");
        assert!(env.contains("ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15999'\n"));
        assert!(env.contains("ISTIO_META_NETWORK='net-1'\n"));
        assert!(env.contains("ISTIO_META_DNS_CAPTURE='true'\n"), "{env}");
        assert!(env.contains("ISTIO_META_MESH_ID='m1'\n"));
        assert!(env.contains("TRUST_DOMAIN='example.org'\n"));
        assert!(env.contains("CANONICAL_REVISION='v2'\n"));
        assert!(env.contains(
            "ISTIO_META_POD_PORTS='[{\"name\":\"grpc\",\"containerPort\":9090,\"protocol\":\"\"},{\"name\":\"http\",\"containerPort\":8080,\"protocol\":\"\"}]'"
        ));
        assert!(!env.contains("CA_ADDR"), "default revision has no CA_ADDR");
        assert!(
            files.mesh_yaml.contains("  meshId: m1\n"),
            "{}",
            files.mesh_yaml
        );
        assert!(files.mesh_yaml.contains("  statusPort: 15999\n"));
        assert_eq!(files.hosts, "192.0.2.1 istiod.istio-system.svc\n");
    }

    #[test]
    fn explicit_inbound_ports_and_no_gateway() {
        let g =
            group("metadata: {name: vm, namespace: ns}\nspec: {template: {ports: {http: 80}}}\n");
        let files = render(&ModernInputs {
            group: &g,
            mesh_config: "",
            istio_namespace: "istio-system",
            revision: Some("canary"),
            cluster_id: "c1",
            internal_ip: Some("10.0.0.5".parse().unwrap()),
            gateway_ip: None,
            service_cidr: "10.96.0.0/12",
            inbound_ports: Some(&[8080, 9090]),
        })
        .unwrap();
        assert!(
            files
                .cluster_env
                .contains("ISTIO_INBOUND_PORTS='8080,9090'\n")
        );
        assert!(
            files
                .cluster_env
                .contains("ISTIO_SERVICE_CIDR='10.96.0.0/12'\n")
        );
        assert!(
            files
                .cluster_env
                .contains("CA_ADDR='istiod-canary.istio-system.svc:15012'\n")
        );
        assert!(files.cluster_env.contains("SERVICE_ACCOUNT='default'\n"));
        assert_eq!(files.hosts, "");
    }

    #[test]
    fn malformed_inputs_name_themselves() {
        let g = group("metadata: {name: vm, namespace: ns}\n");
        let base = ModernInputs {
            group: &g,
            mesh_config: "defaultConfig:\n  proxyMetadata:\n    N: 1\n",
            istio_namespace: "istio-system",
            revision: None,
            cluster_id: "c",
            internal_ip: None,
            gateway_ip: None,
            service_cidr: "*",
            inbound_ports: None,
        };
        let err = render(&base).unwrap_err();
        assert!(err.contains("proxyMetadata.N"), "{err}");
        let err = render(&ModernInputs {
            mesh_config: "- a\n",
            ..base.clone()
        })
        .unwrap_err();
        assert!(err.contains("not a mapping"), "{err}");
        let v: Value = serde_saphyr::from_str("spec: {template: {ports: {http: x}}}").unwrap();
        assert!(
            WorkloadGroup::from_object(&v)
                .unwrap_err()
                .contains("ports.http")
        );
    }
}
