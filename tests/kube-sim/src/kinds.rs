//! What the apiserver does per built-in kind: defaulting, validation, and side effects.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::registry::ResourceType;
use crate::status::ApiError;
use crate::store::State;
use crate::util::{self, name_of, namespace_of};

fn invalid(rt: &ResourceType, obj: &Value, field: &str, reason: &str, msg: String) -> ApiError {
    ApiError::invalid(
        &rt.group,
        &rt.kind,
        name_of(obj),
        &[(field.into(), reason.into(), msg)],
    )
}

/// Defaulting and validation per kind; `old` is the live object on updates; `dry_run` for
/// `dryRun=All` (what allocators skip then depends on the version).
pub fn prepare(
    state: &mut State,
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
) -> Result<(), ApiError> {
    if !state.loading {
        validate_metadata(rt, obj)?;
        check_immutable(rt, obj, old)?;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => {
            let name = name_of(obj).to_string();
            if state.version.namespace_name_label() {
                util::map_at(obj, &["metadata", "labels"])
                    .insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            util::map_at(obj, &["spec"])
                .entry("finalizers")
                .or_insert_with(|| json!(["kubernetes"]));
            util::map_at(obj, &["status"])
                .entry("phase")
                .or_insert_with(|| json!("Active"));
        }
        ("", "secrets") => prepare_secret(rt, obj)?,
        ("", "services") => prepare_service(state, rt, obj, old, dry_run)?,
        ("", "pods") => {
            default_pod_spec(util::map_at(obj, &["spec"]));
            util::map_at(obj, &["status"])
                .entry("phase")
                .or_insert_with(|| json!("Pending"));
        }
        ("apps", "deployments") => prepare_deployment(rt, obj, old)?,
        ("apiextensions.k8s.io", "customresourcedefinitions") => prepare_crd(rt, obj)?,
        _ => {}
    }
    Ok(())
}

fn prepare_secret(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        let data = util::map_at(obj, &["data"]);
        for (k, v) in sd {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            data.insert(k, json!(STANDARD.encode(text)));
        }
    }
    if let Some(Value::Object(data)) = obj.get("data") {
        for (k, v) in data {
            let ok = v.as_str().is_some_and(|s| STANDARD.decode(s).is_ok());
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k:?}]"
                )));
            }
        }
        let bad: Vec<&String> = data
            .keys()
            .filter(|k| {
                k.is_empty()
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            })
            .collect();
        if let Some(k) = bad.first() {
            return Err(invalid(
                rt,
                obj,
                &format!("data[{k}]"),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                ),
            ));
        }
    }
    if obj
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        obj["type"] = json!("Opaque");
    }
    Ok(())
}

fn used_cluster_ips(state: &State, except: (&str, &str)) -> BTreeSet<String> {
    state
        .iter_resource("/services", None)
        .filter(|(k, _)| (k.1.as_str(), k.2.as_str()) != except)
        .filter_map(|(_, s)| util::str_at(s, &["spec", "clusterIP"]).map(str::to_string))
        .collect()
}

fn used_node_ports(state: &State, except: (&str, &str)) -> BTreeSet<i64> {
    state
        .iter_resource("/services", None)
        .filter(|(k, _)| (k.1.as_str(), k.2.as_str()) != except)
        .flat_map(|(_, s)| {
            s.pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
        .collect()
}

fn prepare_service(
    state: &mut State,
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
) -> Result<(), ApiError> {
    let (version, runtime) = (state.version, state.runtime);
    let me = (namespace_of(obj).to_string(), name_of(obj).to_string());
    let spec = util::map_at(obj, &["spec"]);
    let ty = spec
        .entry("type")
        .or_insert_with(|| json!("ClusterIP"))
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    spec.entry("sessionAffinity")
        .or_insert_with(|| json!("None"));
    let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
    let has_ports = ports.as_ref().is_some_and(|p| !p.is_empty());
    if let Some(ports) = ports {
        for p in ports.iter_mut() {
            if let Some(m) = p.as_object_mut() {
                m.entry("protocol").or_insert_with(|| json!("TCP"));
                if let Some(port) = m.get("port").cloned() {
                    m.entry("targetPort").or_insert(port);
                }
            }
        }
    }
    // Fields this version does not have (≤1.19: no `clusterIPs`, `ipFamilies`,
    // `ipFamilyPolicy`) or drops with their gate off (`dropServiceDisabledFields`) are dropped.
    if !version.service_cluster_ips() {
        spec.remove("clusterIPs");
    }
    if !version.service_ip_families() {
        spec.remove("ipFamilies");
        spec.remove("ipFamilyPolicy");
    }
    if !version.service_internal_traffic_policy() {
        spec.remove("internalTrafficPolicy");
    }
    // A client of the dual-stack API may give only `clusterIPs`.
    if version.service_cluster_ips()
        && spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        && let Some(first) = spec
            .get("clusterIPs")
            .and_then(|v| v.get(0))
            .and_then(Value::as_str)
            .map(str::to_string)
    {
        spec.insert("clusterIP".into(), json!(first));
    }
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if !has_ports && ty != "ExternalName" && !headless {
        return Err(invalid(
            rt,
            obj,
            "spec.ports",
            "FieldValueRequired",
            "Required value".into(),
        ));
    }
    if ty == "ExternalName" {
        return Ok(());
    }
    let old_ip = old
        .and_then(|o| util::str_at(o, &["spec", "clusterIP"]))
        .map(str::to_string);
    let want = util::str_at(obj, &["spec", "clusterIP"])
        .unwrap_or("")
        .to_string();
    let cidr = state.cidr.to_string();
    let ip: Option<String> = match (&old_ip, want.as_str()) {
        (Some(o), "") => Some(o.clone()),
        (Some(o), w) if w != o => {
            let (field, message) = version.cluster_ip_immutable(w);
            return Err(invalid(rt, obj, &field, "FieldValueInvalid", message));
        }
        (Some(o), _) => Some(o.clone()),
        (None, "None") => Some("None".to_string()),
        // Before 1.23 a dry-run create allocates nothing (see `dry_run_checks_cluster_ip`).
        (None, "") if dry_run && !version.dry_run_checks_cluster_ip(runtime) => None,
        (None, "") => {
            // The lowest free address from offset 10, as ever; the index (see
            // `State::cluster_ips`) holds what is taken and where the free ones start.
            if state.cluster_ips.is_none() {
                let used = used_cluster_ips(state, ("", "")).into_iter().collect();
                state.cluster_ips = Some((used, 10));
            }
            let (used, from) = state.cluster_ips.as_ref().expect("just built");
            let next = (*from..1 << 20)
                .filter_map(|n| state.cidr.nth(n))
                .map(|a| a.to_string())
                .find(|a| !used.contains(a));
            match next {
                Some(ip) => Some(ip),
                // `errors.NewInternalError(fmt.Errorf("failed to allocate a serviceIP: %v", ErrFull))`
                // (k8s-versions.md §11).
                None => {
                    return Err(ApiError::internal(
                        "Internal error occurred: failed to allocate a serviceIP: range is full",
                    ));
                }
            }
        }
        (None, w) => {
            if !state.loading
                && !state.cidr.contains(w)
                && let Some((field, message)) =
                    version.cluster_ip_out_of_range(runtime, w, &cidr, dry_run)
            {
                return Err(invalid(rt, obj, &field, "FieldValueInvalid", message));
            }
            if used_cluster_ips(state, (&me.0, &me.1)).contains(w)
                && let Some((field, message)) = version.cluster_ip_taken(runtime, w, dry_run)
            {
                return Err(invalid(rt, obj, &field, "FieldValueInvalid", message));
            }
            Some(w.to_string())
        }
    };
    let spec = util::map_at(obj, &["spec"]);
    if let Some(ip) = &ip {
        let v6 = ip.contains(':');
        spec.insert("clusterIP".into(), json!(ip));
        if version.service_cluster_ips() {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        if version.service_ip_families() {
            spec.entry("ipFamilies")
                .or_insert_with(|| json!([if v6 { "IPv6" } else { "IPv4" }]));
            spec.entry("ipFamilyPolicy")
                .or_insert_with(|| json!("SingleStack"));
        }
    }
    if version.service_internal_traffic_policy() {
        spec.entry("internalTrafficPolicy")
            .or_insert_with(|| json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        spec.entry("externalTrafficPolicy")
            .or_insert_with(|| json!("Cluster"));
        let mut used = used_node_ports(state, (&me.0, &me.1));
        let spec = util::map_at(obj, &["spec"]);
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if p.get("nodePort").and_then(Value::as_i64).is_none()
                    && let Some(n) = (30000..=32767).find(|n| !used.contains(n))
                {
                    used.insert(n);
                    p["nodePort"] = json!(n);
                }
            }
        }
    }
    util::map_at(obj, &["status"])
        .entry("loadBalancer")
        .or_insert_with(|| json!({}));
    Ok(())
}

fn prepare_deployment(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(match_labels) = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .cloned()
    else {
        if obj.pointer("/spec/selector").is_none() {
            return Err(invalid(
                rt,
                obj,
                "spec.selector",
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        return Ok(());
    };
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if match_labels.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
        return Err(invalid(
            rt,
            obj,
            "spec.template.metadata.labels",
            "FieldValueInvalid",
            format!(
                "Invalid value: map[string]string{{{}}}: `selector` does not match template `labels`",
                shown.join(", ")
            ),
        ));
    }
    if let Some(o) = old
        && o.pointer("/spec/selector") != obj.pointer("/spec/selector")
    {
        return Err(invalid(
            rt,
            obj,
            "spec.selector",
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: field is immutable",
                obj.pointer("/spec/selector").cloned().unwrap_or_default()
            ),
        ));
    }
    default_pod_spec(util::map_at(obj, &["spec", "template", "spec"]));
    let spec = util::map_at(obj, &["spec"]);
    spec.entry("replicas").or_insert_with(|| json!(1));
    spec.entry("revisionHistoryLimit")
        .or_insert_with(|| json!(10));
    spec.entry("progressDeadlineSeconds")
        .or_insert_with(|| json!(600));
    spec.entry("strategy").or_insert_with(|| {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    });
    if old.is_none() && obj.get("status").is_none() {
        deployment_status(obj);
    }
    Ok(())
}

/// The pod spec defaults the apiserver applies (`pkg/apis/core/v1/defaults.go`).
fn default_pod_spec(spec: &mut serde_json::Map<String, Value>) {
    spec.entry("restartPolicy")
        .or_insert_with(|| json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert_with(|| json!(30));
    spec.entry("dnsPolicy")
        .or_insert_with(|| json!("ClusterFirst"));
    spec.entry("securityContext").or_insert_with(|| json!({}));
    spec.entry("schedulerName")
        .or_insert_with(|| json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        let Some(Value::Array(cs)) = spec.get_mut(list) else {
            continue;
        };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            c.entry("terminationMessagePath")
                .or_insert_with(|| json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy")
                .or_insert_with(|| json!("File"));
            c.entry("resources").or_insert_with(|| json!({}));
            if !c.contains_key("imagePullPolicy") {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                // `:latest` or no tag (and no digest) pulls always, as the defaulting does.
                let last = image.rsplit('/').next().unwrap_or(image);
                let always = !image.contains('@')
                    && last.split_once(':').is_none_or(|(_, tag)| tag == "latest");
                c.insert(
                    "imagePullPolicy".into(),
                    json!(if always { "Always" } else { "IfNotPresent" }),
                );
            }
            if let Some(Value::Array(ports)) = c.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.entry("protocol").or_insert_with(|| json!("TCP"));
                }
            }
        }
    }
}

/// The emulated deployment controller: every replica is immediately updated, ready and available.
fn deployment_status(obj: &mut Value) {
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let now = util::now_rfc3339();
    obj["status"] = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{}\" has successfully progressed.", name_of(obj)),
             "lastUpdateTime": now, "lastTransitionTime": now}
        ]
    });
}

/// Called when an update bumped `metadata.generation`: a Deployment starts rolling out (the
/// emulated deployment controller finishes it after the rollout delay).
pub fn after_generation_bump(rt: &ResourceType, obj: &mut Value) {
    if rt.group == "apps" && rt.plural == "deployments" {
        crate::controllers::rollout_started(obj);
    }
}

/// The v1 defaults of a CRD spec: `conversion.strategy: None` (apiext@kubernetes-1.16.0
/// pkg/apis/apiextensions/v1/defaults.go `SetDefaults_CustomResourceDefinitionSpec`).
fn default_crd_spec(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }
}

fn prepare_crd(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    default_crd_spec(obj);
    let info = crate::schema::parse_crd(obj)
        .map_err(|e| invalid(rt, obj, "spec", "FieldValueInvalid", e))?;
    let want = format!("{}.{}", info.plural, info.group);
    if name_of(obj) != want {
        return Err(invalid(
            rt,
            obj,
            "metadata.name",
            "FieldValueInvalid",
            format!(
                "Invalid value: \"{}\": must be spec.names.plural+\".\"+spec.group",
                name_of(obj)
            ),
        ));
    }
    let storage: Vec<String> = info
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.clone())
        .collect();
    let names = obj.pointer("/spec/names").cloned().unwrap_or_default();
    let now = util::now_rfc3339();
    obj["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now}
        ],
        "storedVersions": storage,
    });
    Ok(())
}

/// A v1 CRD (as stored) in the `apiextensions.k8s.io/v1beta1` shape the apiserver serves it in
/// at that version: `spec.version` is `versions[0].name`; per-version `schema`, `subresources`
/// and `additionalPrinterColumns` that are identical in every version move to `spec.validation`,
/// `spec.subresources`, `spec.additionalPrinterColumns` (apiext@kubernetes-1.16.0
/// pkg/apis/apiextensions/v1/conversion.go `Convert_v1_CustomResourceDefinitionSpec_To_apiextensions_CustomResourceDefinitionSpec`);
/// printer columns spell `JSONPath` (apiext@kubernetes-1.16.0
/// pkg/apis/apiextensions/v1beta1/types.go). `apiVersion` is left to the caller.
pub fn crd_to_v1beta1(crd: &Value) -> Value {
    let mut out = crd.clone();
    let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) else {
        return out;
    };
    let mut versions: Vec<Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(first) = versions
        .first()
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
    {
        spec.insert("version".into(), json!(first));
    }
    for (per_version, top) in [
        ("schema", "validation"),
        ("subresources", "subresources"),
        ("additionalPrinterColumns", "additionalPrinterColumns"),
    ] {
        let first = versions.first().and_then(|v| v.get(per_version)).cloned();
        let identical = versions
            .iter()
            .all(|v| v.get(per_version).cloned() == first);
        if !identical {
            continue;
        }
        for v in &mut versions {
            if let Some(m) = v.as_object_mut() {
                m.remove(per_version);
            }
        }
        if let Some(value) = first {
            spec.insert(top.into(), value);
        }
    }
    let beta_columns = |cols: &mut Value| {
        if let Some(list) = cols.as_array_mut() {
            for c in list.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(p) = c.remove("jsonPath") {
                    c.insert("JSONPath".into(), p);
                }
            }
        }
    };
    if let Some(cols) = spec.get_mut("additionalPrinterColumns") {
        beta_columns(cols);
    }
    for v in &mut versions {
        if let Some(cols) = v.get_mut("additionalPrinterColumns") {
            beta_columns(cols);
        }
    }
    spec.insert("versions".into(), json!(versions));
    spec.entry("preserveUnknownFields")
        .or_insert_with(|| json!(false));
    out
}

/// A CRD written at `apiextensions.k8s.io/v1beta1` in the stored v1 form (status kept; v1 omits
/// `preserveUnknownFields: false`).
pub fn crd_from_v1beta1(obj: &Value) -> Result<Value, String> {
    let mut v1 = crate::schema::to_v1_crd(obj)?;
    if let Some(s) = obj.get("status") {
        v1["status"] = s.clone();
    }
    if let Some(spec) = v1.get_mut("spec").and_then(Value::as_object_mut)
        && spec.get("preserveUnknownFields") == Some(&json!(false))
    {
        spec.remove("preserveUnknownFields");
    }
    Ok(v1)
}

/// Side effects that are the apiserver's own: a namespace's `default` ServiceAccount, a CRD's
/// resource becoming servable.
pub fn after_write(state: &mut State, rt: &ResourceType, obj: &Value, created: bool) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") if created => {
            let ns = name_of(obj).to_string();
            if state.get_obj("/serviceaccounts", &ns, "default").is_none() {
                // The object is well-formed by construction; failure here is a sim bug.
                state
                    .upsert(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": "default", "namespace": ns}}))
                    .expect("default ServiceAccount is valid");
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            if let Ok(info) = crate::schema::parse_crd(obj) {
                let t = ResourceType::from_crd(&info, obj);
                if state.registry.get(&t.key()).is_none_or(|old| !old.builtin) {
                    state.registry.insert(t);
                }
            }
        }
        _ => {}
    }
}

/// The field selectors the apiserver supports for a kind (others are refused with 400).
pub fn selectable_fields(rt: &ResourceType, crd: Option<&Value>, version: &str) -> Vec<String> {
    let mut out = vec![
        "metadata.name".to_string(),
        "metadata.namespace".to_string(),
    ];
    let extra: &[&str] = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &[],
    };
    out.extend(extra.iter().map(|s| (*s).to_string()));
    // CRDs may declare more (`selectableFields`, Kubernetes ≥ 1.31).
    if let Some(fields) = crd
        .and_then(|c| c.pointer("/spec/versions"))
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
        })
        .and_then(|v| v.get("selectableFields"))
        .and_then(Value::as_array)
    {
        out.extend(
            fields
                .iter()
                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                .map(|p| p.trim_start_matches('.').to_string()),
        );
    }
    out
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// A qualified name (`prefix/name` or `name`), as label and annotation keys must be.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !util::is_dns_subdomain(p)
    {
        return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    if is_label_name(name) {
        None
    } else {
        Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into())
    }
}

/// Label and annotation syntax, as `ValidateObjectMeta` checks it.
fn validate_metadata(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(p) = key_problem(k) {
                causes.push((
                    "metadata.labels".to_string(),
                    "FieldValueInvalid".to_string(),
                    format!("Invalid value: {k:?}: {p}"),
                ));
            }
            let v = v.as_str().unwrap_or("");
            if !(v.is_empty() || is_label_name(v)) {
                causes.push((
                    "metadata.labels".to_string(),
                    "FieldValueInvalid".to_string(),
                    format!("Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
                ));
            }
        }
    }
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Some(p) = key_problem(&k.to_ascii_lowercase()) {
                causes.push((
                    "metadata.annotations".to_string(),
                    "FieldValueInvalid".to_string(),
                    format!("Invalid value: {k:?}: {p}"),
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push((
                "metadata.annotations".to_string(),
                "FieldValueTooLong".to_string(),
                "Too long: must have at most 262144 bytes".to_string(),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &rt.group,
            &rt.kind,
            name_of(obj),
            &causes,
        ))
    }
}

/// Secret `type` never changes; Secret and ConfigMap contents do not once `immutable: true`.
fn check_immutable(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let Some(old) = old else {
        return Ok(());
    };
    let kind = (rt.group.as_str(), rt.plural.as_str());
    if kind == ("", "secrets") {
        let before = old.get("type").and_then(Value::as_str).unwrap_or("Opaque");
        let after = obj.get("type").and_then(Value::as_str).unwrap_or(before);
        if before != after {
            return Err(invalid(
                rt,
                obj,
                "type",
                "FieldValueInvalid",
                format!("Invalid value: {after:?}: field is immutable"),
            ));
        }
    }
    // `ValidateRoleBindingUpdate` / `ValidateClusterRoleBindingUpdate`: `field.Invalid(roleRef,
    // <the new internal rbac.RoleRef>, "cannot change roleRef")`, printed with Go's `%#v`
    // (kubernetes pkg/apis/rbac/validation/validation.go).
    if kind == (crate::rbac::GROUP, "rolebindings")
        || kind == (crate::rbac::GROUP, "clusterrolebindings")
    {
        let r = |o: &Value, k: &str| util::str_at(o, &["roleRef", k]).unwrap_or("").to_string();
        let changed = ["apiGroup", "kind", "name"]
            .iter()
            .any(|k| r(obj, k) != r(old, k));
        if changed {
            return Err(invalid(
                rt,
                obj,
                "roleRef",
                "FieldValueInvalid",
                format!(
                    "Invalid value: rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}: cannot change roleRef",
                    r(obj, "apiGroup"),
                    r(obj, "kind"),
                    r(obj, "name")
                ),
            ));
        }
    }
    if (kind == ("", "secrets") || kind == ("", "configmaps"))
        && old.get("immutable") == Some(&json!(true))
    {
        for field in ["data", "binaryData"] {
            if obj.get(field) != old.get(field)
                && !(kind == ("", "secrets") && field == "binaryData")
            {
                return Err(invalid(
                    rt,
                    obj,
                    field,
                    "FieldValueForbidden",
                    "Forbidden: field is immutable when `immutable` is set".into(),
                ));
            }
        }
        if obj.get("immutable") != Some(&json!(true)) {
            return Err(invalid(
                rt,
                obj,
                "immutable",
                "FieldValueForbidden",
                "Forbidden: field is immutable when `immutable` is set".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every CRD the sim ships reads back unchanged after a trip through the v1beta1 shape, so
    /// a v1beta1 client that writes back what it read changes nothing.
    #[test]
    fn crds_round_trip_through_v1beta1() {
        for set in ["modern", "istio-1.4"] {
            for crd in crate::schema::crd_set(set).unwrap() {
                let mut v1 = crate::schema::to_v1_crd(&crd).unwrap();
                default_crd_spec(&mut v1);
                let mut beta = crd_to_v1beta1(&v1);
                beta["apiVersion"] = json!("apiextensions.k8s.io/v1beta1");
                let mut back = crd_from_v1beta1(&beta).unwrap();
                default_crd_spec(&mut back);
                // `assert!`, not `assert_eq!`: the CRDs are too long to print.
                assert!(back == v1, "{set} {}", name_of(&crd));
                assert!(beta["spec"]["version"].is_string());
            }
        }
    }

    #[test]
    fn v1beta1_shape_hoists_only_identical_per_version_fields() {
        let v1 = json!({"spec": {"versions": [
            {"name": "v1", "served": true, "storage": true,
             "schema": {"openAPIV3Schema": {"type": "object"}},
             "additionalPrinterColumns": [{"name": "Host", "type": "string", "jsonPath": ".spec.host"}]},
            {"name": "v1beta1", "served": true, "storage": false,
             "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
             "additionalPrinterColumns": [{"name": "Host", "type": "string", "jsonPath": ".spec.host"}]}]}});
        let b = crd_to_v1beta1(&v1);
        assert_eq!(b["spec"]["version"], "v1");
        assert!(b["spec"].get("validation").is_none());
        assert_eq!(
            b["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        assert_eq!(
            b["spec"]["additionalPrinterColumns"][0]["JSONPath"],
            ".spec.host"
        );
        assert!(
            b["spec"]["versions"][0]
                .get("additionalPrinterColumns")
                .is_none()
        );
        assert_eq!(b["spec"]["preserveUnknownFields"], false);
    }
}
