//! Discovery documents (`/api`, `/apis`, legacy and aggregated) and OpenAPI v3, as kubectl reads them.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::registry::ResourceType;
use crate::util::parse_accept;
pub use crate::version::Aggregated;
use crate::version::{ApiSurface, KubeVersion};

impl Aggregated {
    /// The aggregated format an `Accept` header gets from a server at `version`: the first
    /// clause (in the client's order, after q-values) naming a format the version serves; None
    /// means the legacy `APIVersions`/`APIGroupList`.
    ///
    /// The wrapper negotiates with restrictions that accept only the aggregated GVKs
    /// (apiserver@kubernetes-1.30.0 pkg/endpoints/discovery/aggregated/wrapper.go:41-49,
    /// negotiation.go:40; plain clauses are skipped, pkg/endpoints/handlers/negotiation/negotiate.go:229),
    /// so a plain `application/json` before an aggregated clause does not win.
    pub fn from_accept(accept: &str, version: KubeVersion) -> Option<Self> {
        let served = version.aggregated_discovery();
        parse_accept(accept).into_iter().find_map(|c| {
            let json_like = (c.typ == "application" || c.typ == "*")
                && matches!(
                    c.subtype.as_str(),
                    "json" | "yaml" | "vnd.kubernetes.protobuf" | "*"
                );
            if !json_like
                || c.param("g") != Some("apidiscovery.k8s.io")
                || c.param("as") != Some("APIGroupDiscoveryList")
            {
                return None;
            }
            served
                .iter()
                .copied()
                .find(|f| Some(f.version()) == c.param("v"))
        })
    }

    /// The response Content-Type (the requested type, echoed).
    pub fn content_type(self) -> &'static str {
        match self {
            Aggregated::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            Aggregated::V2beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Aggregated::V2 => "apidiscovery.k8s.io/v2",
            Aggregated::V2beta1 => "apidiscovery.k8s.io/v2beta1",
        }
    }
}

/// Subresources of a type: (name, response group, version, kind, verbs).
fn subresources(
    t: &ResourceType,
    version: &str,
) -> Vec<(String, String, String, String, Vec<&'static str>)> {
    let mut out = Vec::new();
    if t.status_subresource {
        out.push((
            "status".into(),
            t.group.clone(),
            version.to_string(),
            t.kind.clone(),
            vec!["get", "patch", "update"],
        ));
    }
    if t.group.is_empty() && t.plural == "serviceaccounts" {
        out.push((
            "token".into(),
            "authentication.k8s.io".into(),
            "v1".into(),
            "TokenRequest".into(),
            vec!["create"],
        ));
    }
    if t.group == "apps" && t.plural == "deployments" {
        out.push((
            "scale".into(),
            "autoscaling".into(),
            "v1".into(),
            "Scale".into(),
            vec!["get", "patch", "update"],
        ));
    }
    out
}

/// `GET /version`.
pub fn version(v: KubeVersion) -> Value {
    json!({
        "major": "1",
        "minor": v.minor().to_string(),
        "gitVersion": v.git_version(),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Legacy `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Legacy `GET /apis`.
pub fn api_group_list(reg: &ApiSurface<'_>) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(&g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn group_json(g: &str, vs: &[String]) -> Value {
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": g,
        "versions": versions,
        "preferredVersion": {"groupVersion": format!("{g}/{}", vs[0]), "version": vs[0]},
    })
}

/// Legacy `GET /apis/<group>`.
pub fn api_group(reg: &ApiSurface<'_>, group: &str) -> Option<Value> {
    let (g, vs) = reg.groups().into_iter().find(|(g, _)| g == group)?;
    let mut v = group_json(&g, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

/// Legacy `GET /api/v1` or `/apis/<group>/<version>`.
pub fn api_resource_list(reg: &ApiSurface<'_>, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in &reg.in_group_version(group, version) {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        for (sub, g, v, kind, vb) in subresources(t, version) {
            let mut s = json!({
                "name": format!("{}/{sub}", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": kind,
                "verbs": vb,
            });
            if g != t.group {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            resources.push(s);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn discovery_resource(t: &ResourceType, version: &str) -> Value {
    let mut r = json!({
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": t.verbs,
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    let subs: Vec<Value> = subresources(t, version)
        .into_iter()
        .map(|(sub, g, v, kind, vb)| {
            json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": vb})
        })
        .collect();
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

/// Aggregated `GET /api` (`core = true`) or `GET /apis`.
pub fn aggregated(reg: &ApiSurface<'_>, core: bool, format: Aggregated) -> Value {
    let items: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = reg
                        .in_group_version(&g, v)
                        .iter()
                        .map(|t| discovery_resource(t, v))
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut item = json!({"metadata": {"creationTimestamp": null}, "versions": versions});
            if !g.is_empty() {
                item["metadata"]["name"] = json!(g);
            }
            item
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format.api_version(),
        "metadata": {},
        "items": items,
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: one entry per group-version, with a hash that changes with its content.
pub fn openapi_root(reg: &ApiSurface<'_>) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let doc = openapi_gv(reg, &g, &v).unwrap_or_default();
            let hash = hex::encode(Sha256::digest(doc.to_string().as_bytes()));
            let p = gv_path(&g, &v);
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash.to_uppercase())}));
        }
    }
    json!({"paths": paths})
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn gvk_ext(t: &ResourceType, version: &str) -> Value {
    json!({"group": t.group, "version": version, "kind": t.kind})
}

/// `GET /openapi/v3/<api|apis/g>/<v>`: per kind the operations kubectl's query-parameter
/// verifier looks for (a `patch` with `x-kubernetes-group-version-kind` and `fieldValidation`).
/// Schemas are not published, so `kubectl explain` has nothing to show.
pub fn openapi_gv(reg: &ApiSurface<'_>, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let write_params = vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.",
        ),
    ];
    let mut any = false;
    for t in &reg.in_group_version(group, version) {
        let t: &ResourceType = t;
        any = true;
        let base = format!("/{}", gv_path(group, version));
        let (coll, item) = if t.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", t.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural),
            )
        } else {
            (
                format!("{base}/{}", t.plural),
                format!("{base}/{}/{{name}}", t.plural),
            )
        };
        let op = |action: &str, id: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{id}{}", t.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk_ext(t, version),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let mut patch_params = write_params.clone();
        patch_params.push(query_param(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        paths.insert(
            coll,
            json!({
                "get": op("list", "list", vec![query_param("labelSelector", "A selector to restrict the list of returned objects by their labels."), query_param("limit", "limit is a maximum number of responses to return for a list call.")]),
                "post": op("post", "create", write_params.clone()),
                "delete": op("deletecollection", "deleteCollection", vec![query_param("dryRun", "When present, indicates that modifications should not be persisted.")]),
            }),
        );
        paths.insert(
            item,
            json!({
                "get": op("get", "read", vec![]),
                "put": op("put", "replace", write_params.clone()),
                "patch": op("patch", "patch", patch_params),
                "delete": op("delete", "delete", vec![query_param("dryRun", "When present, indicates that modifications should not be persisted.")]),
            }),
        );
    }
    if !any {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": reg.version.git_version()},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::registry::Registry;
    use crate::version::RuntimeConfig;

    fn at(reg: &Registry, minor: u32) -> ApiSurface<'_> {
        ApiSurface::new(
            reg,
            KubeVersion::new(minor).unwrap(),
            RuntimeConfig::default(),
        )
    }

    #[test]
    fn accept_header_picks_aggregated_format_the_version_serves() {
        let v = |m| KubeVersion::new(m).unwrap();
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            Aggregated::from_accept(kubectl, v(32)),
            Some(Aggregated::V2)
        );
        assert_eq!(
            Aggregated::from_accept(kubectl, v(28)),
            Some(Aggregated::V2beta1)
        );
        assert_eq!(Aggregated::from_accept(kubectl, v(26)), None);
        let b1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            Aggregated::from_accept(b1, v(30)),
            Some(Aggregated::V2beta1)
        );
        assert_eq!(Aggregated::from_accept(b1, v(33)), None);
        assert_eq!(
            Aggregated::from_accept("application/json, */*", v(33)),
            None
        );
        // A plain clause first does not stop the aggregated one (restricted negotiation).
        let plain_first =
            "application/json,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        assert_eq!(
            Aggregated::from_accept(plain_first, v(33)),
            Some(Aggregated::V2)
        );
        // q-values order the clauses.
        let q = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0.5,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        assert_eq!(Aggregated::from_accept(q, v(31)), Some(Aggregated::V2beta1));
    }

    #[test]
    fn core_discovery_lists_token_subresource_and_short_names() {
        let registry = Registry::new();
        let reg = at(&registry, 32);
        let l = api_resource_list(&reg, "", "v1").unwrap();
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"serviceaccounts/token"));
        let agg = aggregated(&reg, true, Aggregated::V2);
        let res = &agg["items"][0]["versions"][0]["resources"];
        let svc = res
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "services")
            .unwrap();
        assert_eq!(svc["shortNames"], json!(["svc"]));
        assert_eq!(svc["scope"], "Namespaced");
    }

    #[test]
    fn openapi_has_patch_with_gvk_and_field_validation() {
        let registry = Registry::new();
        let reg = at(&registry, 32);
        let doc = openapi_gv(&reg, "", "v1").unwrap();
        let p = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Secret");
        assert!(
            p["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == "fieldValidation")
        );
        assert!(
            openapi_root(&reg)["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
    }
}

/// Protobuf field writers for the OpenAPI v2 document (gnostic's `openapi_v2` messages).
mod pb {
    /// Appends a base-128 varint.
    pub(super) fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// Appends a length-delimited field.
    pub(super) fn bytes(n: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(n) << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// Appends a bool (varint) field.
    pub(super) fn boolean(n: u32, v: bool, out: &mut Vec<u8>) {
        varint(u64::from(n) << 3, out);
        varint(u64::from(v), out);
    }
}

/// `GET /openapi/v2` as kubectl ≤ 1.29 fetches it (protobuf only): per kind a `patch` operation
/// with `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter, so those
/// kubectls validate server-side like newer ones; no definitions.
pub fn openapi_v2_protobuf(reg: &ApiSurface<'_>) -> Vec<u8> {
    let mut paths = Vec::new();
    for t in &reg.types() {
        for version in &t.versions {
            let base = format!("/{}", gv_path(&t.group, version));
            let item_path = if t.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
            } else {
                format!("{base}/{}/{{name}}", t.plural)
            };
            let mut op = Vec::new();
            pb::bytes(5, format!("patch{}", t.kind).as_bytes(), &mut op);
            for name in ["dryRun", "fieldManager", "fieldValidation", "force"] {
                let mut q = Vec::new();
                pb::bytes(2, b"query", &mut q);
                pb::bytes(4, name.as_bytes(), &mut q);
                pb::bytes(6, b"string", &mut q);
                pb::boolean(20, true, &mut q);
                let mut non_body = Vec::new();
                pb::bytes(3, &q, &mut non_body);
                let mut param = Vec::new();
                pb::bytes(2, &non_body, &mut param);
                let mut item = Vec::new();
                pb::bytes(1, &param, &mut item);
                pb::bytes(8, &item, &mut op);
            }
            let yaml = format!(
                "group: {:?}\nkind: {}\nversion: {version}\n",
                t.group, t.kind
            );
            let mut any = Vec::new();
            pb::bytes(2, yaml.as_bytes(), &mut any);
            let mut ext = Vec::new();
            pb::bytes(1, b"x-kubernetes-group-version-kind", &mut ext);
            pb::bytes(2, &any, &mut ext);
            pb::bytes(13, &ext, &mut op);
            let mut path_item = Vec::new();
            pb::bytes(8, &op, &mut path_item);
            let mut named = Vec::new();
            pb::bytes(1, item_path.as_bytes(), &mut named);
            pb::bytes(2, &path_item, &mut named);
            pb::bytes(2, &named, &mut paths);
        }
    }
    let mut info = Vec::new();
    pb::bytes(1, b"Kubernetes", &mut info);
    pb::bytes(2, reg.version.git_version().as_bytes(), &mut info);
    let mut doc = Vec::new();
    pb::bytes(1, b"2.0", &mut doc);
    pb::bytes(2, &info, &mut doc);
    pb::bytes(8, &paths, &mut doc);
    doc
}
