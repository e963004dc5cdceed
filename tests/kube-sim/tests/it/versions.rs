//! The per-version contract: what each Kubernetes minor serves and how it answers, over HTTP
//! (kube-rs' client for transport) and through kube-rs' typed and metadata APIs.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube_sim::{RuntimeConfig, Scenario, Server};
use serde_json::{Value, json};

async fn sim(version: &str) -> Server {
    Server::start(Scenario::empty().with_kube_version(version)).await
}

async fn send(client: &kube::Client, req: http::Request<Vec<u8>>) -> (u16, http::HeaderMap, Value) {
    let (status, headers, bytes) = crate::raw(client, req).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, body)
}

fn get(path: &str, accept: &str) -> http::Request<Vec<u8>> {
    let mut r = http::Request::get(path);
    if !accept.is_empty() {
        r = r.header("Accept", accept);
    }
    r.body(Vec::new()).unwrap()
}

fn with_body(method: &str, path: &str, content_type: &str, body: &Value) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(serde_json::to_vec(body).unwrap())
        .unwrap()
}

const KUBECTL_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
const KUBECTL_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const META_LIST_V1: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
const META_LIST_V1BETA1: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1";

fn dr_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", "v1alpha3", "DestinationRule"),
            "destinationrules",
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn version_endpoint_reports_the_release() {
    for (v, git, minor) in [("1.14", "v1.14.0", "14"), ("v1.35.2", "v1.35.0", "35")] {
        let server = sim(v).await;
        let (code, _, body) = send(&server.client(), get("/version", "")).await;
        assert_eq!(code, 200);
        assert_eq!(
            (body["gitVersion"].as_str(), body["minor"].as_str()),
            (Some(git), Some(minor))
        );
        assert_eq!(server.kube_version().git_version(), git);
    }
    let server = sim("1.20").await;
    server.set_kube_version("1.33").unwrap();
    let (_, _, body) = send(&server.client(), get("/version", "")).await;
    assert_eq!(body["gitVersion"], "v1.33.0");
    let e = server.set_kube_version("1.9").unwrap_err().to_string();
    assert!(e.contains("1.13 … 1.35"), "{e}");
    assert_eq!(
        server.kube_version().minor(),
        33,
        "a refused version changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_is_415_before_1_16() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let dr = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
                    "metadata": {"name": "ssa"}, "spec": {"host": "x"}});
    let cm_path = "/api/v1/namespaces/default/configmaps/ssa?fieldManager=t";
    let dr_path =
        "/apis/networking.istio.io/v1alpha3/namespaces/default/destinationrules/ssa?fieldManager=t";
    for v in ["1.13", "1.14", "1.15"] {
        let server = sim(v).await;
        let client = server.client();
        // Built-in kinds: go-restful's router refuses the Content-Type before any handler.
        let (code, _, body) = send(
            &client,
            with_body("PATCH", cm_path, "application/apply-patch+yaml", &cm),
        )
        .await;
        assert_eq!(code, 415, "{v}");
        assert_eq!(
            body,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "415: Unsupported Media Type", "reason": "UnsupportedMediaType",
                   "details": {}, "code": 415}),
            "{v}"
        );
        // Custom resources: the apiextensions handler's own check lists what it accepts.
        let (code, _, body) = send(
            &client,
            with_body("PATCH", dr_path, "application/apply-patch+yaml", &dr),
        )
        .await;
        assert_eq!(code, 415, "{v}");
        assert_eq!(
            body["message"],
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json",
            "{v}"
        );
        // kube-rs sees the same Status; other patch types still work.
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let e = cms
            .patch("ssa", &PatchParams::apply("meshvm"), &Patch::Apply(&cm))
            .await
            .unwrap_err();
        let kube::Error::Api(s) = e else {
            panic!("{e:?}")
        };
        assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(cm.clone()).unwrap(),
        )
        .await
        .unwrap();
        let patched = cms
            .patch(
                "ssa",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"b": "2"}})),
            )
            .await
            .unwrap();
        assert_eq!(patched.data.unwrap()["b"], "2");
    }
    let server = sim("1.16").await;
    let (code, _, body) = send(
        &server.client(),
        with_body("PATCH", cm_path, "application/apply-patch+yaml", &cm),
    )
    .await;
    assert_eq!((code, body["data"]["a"].as_str()), (201, Some("1")));
    let (code, _, _) = send(
        &server.client(),
        with_body("PATCH", dr_path, "application/apply-patch+yaml", &dr),
    )
    .await;
    assert_eq!(code, 201);
    // +cbor needs the CBORServingAndStorage gate, off by default on every supported version.
    let server = sim("1.35").await;
    let (code, _, body) = send(
        &server.client(),
        with_body("PATCH", cm_path, "application/apply-patch+cbor", &cm),
    )
    .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (415, Some("415: Unsupported Media Type"))
    );
    let (code, _, body) = send(
        &server.client(),
        with_body("PATCH", dr_path, "application/apply-patch+cbor", &dr),
    )
    .await;
    assert_eq!(code, 415);
    assert_eq!(
        body["message"],
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_lists_need_1_15_for_v1() {
    let server = sim("1.14").await;
    let client = server.client();
    // kube-rs' metadata API asks for meta.k8s.io/v1 only: a 1.14 server has no such conversion.
    let nss: Api<Namespace> = Api::all(client.clone());
    let e = nss.list_metadata(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(s) = e else {
        panic!("{e:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (406, "NotAcceptable"));
    assert_eq!(
        s.message,
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    );
    let (code, _, body) = send(
        &client,
        get(
            "/apis/networking.istio.io/v1alpha3/destinationrules",
            META_LIST_V1,
        ),
    )
    .await;
    assert_eq!(code, 406);
    assert_eq!(
        body["message"],
        "only the following media types are accepted: application/json, application/yaml"
    );
    // v1beta1 is served on every version.
    let (code, _, body) = send(&client, get("/api/v1/namespaces", META_LIST_V1BETA1)).await;
    assert_eq!(code, 200);
    assert_eq!(
        (body["kind"].as_str(), body["apiVersion"].as_str()),
        (
            Some("PartialObjectMetadataList"),
            Some("meta.k8s.io/v1beta1")
        )
    );
    let items = body["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .all(|i| i["kind"] == "PartialObjectMetadata" && i.get("spec").is_none())
    );
    assert!(items.iter().any(|i| i["metadata"]["name"] == "kube-system"));
    // A fallback clause is used when the first cannot be served.
    let (code, _, body) = send(
        &client,
        get(
            "/api/v1/namespaces",
            &format!("{META_LIST_V1},application/json"),
        ),
    )
    .await;
    assert_eq!((code, body["kind"].as_str()), (200, Some("NamespaceList")));

    let server = sim("1.15").await;
    let nss: Api<Namespace> = Api::all(server.client());
    let list = nss.list_metadata(&ListParams::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("default"))
    );
    let one = nss.get_metadata("default").await.unwrap();
    assert_eq!(one.metadata.name.as_deref(), Some("default"));
    let drs = dr_api(&server.client(), "default");
    assert!(
        drs.list_metadata(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The list/object mismatch is the apiserver's own 406.
    let (code, _, body) = send(
        &server.client(),
        get(
            "/api/v1/namespaces",
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        ),
    )
    .await;
    assert_eq!(code, 406);
    assert_eq!(
        body["message"],
        "you requested PartialObjectMetadata, but the requested object is a list (*core.NamespaceList)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_are_v1beta1_before_1_15() {
    for (v, tv) in [("1.14", "v1beta1"), ("1.15", "v1")] {
        let server = sim(v).await;
        let (code, headers, body) =
            send(&server.client(), get("/api/v1/namespaces", KUBECTL_TABLE)).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            headers["content-type"],
            format!("application/json;as=Table;v={tv};g=meta.k8s.io")
        );
        assert_eq!(body["apiVersion"], format!("meta.k8s.io/{tv}"));
        assert_eq!(
            body["rows"][0]["object"]["apiVersion"],
            format!("meta.k8s.io/{tv}")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregated_discovery_per_version() {
    let only =
        |v: &str| format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
    for (version, accept, want) in [
        ("1.26", KUBECTL_DISCOVERY.to_string(), None),
        ("1.27", KUBECTL_DISCOVERY.to_string(), Some("v2beta1")),
        ("1.29", only("v2"), None),
        ("1.30", KUBECTL_DISCOVERY.to_string(), Some("v2")),
        ("1.32", only("v2beta1"), Some("v2beta1")),
        ("1.33", only("v2beta1"), None),
        ("1.33", KUBECTL_DISCOVERY.to_string(), Some("v2")),
    ] {
        let server = sim(version).await;
        for path in ["/api", "/apis"] {
            let (code, headers, body) = send(&server.client(), get(path, &accept)).await;
            assert_eq!(code, 200);
            if let Some(f) = want {
                assert_eq!(headers["content-type"], only(f), "{version} {path}");
                assert_eq!(body["apiVersion"], format!("apidiscovery.k8s.io/{f}"));
                assert_eq!(body["kind"], "APIGroupDiscoveryList");
            } else {
                assert_eq!(
                    headers["content-type"], "application/json",
                    "{version} {path}"
                );
                let kind = if path == "/api" {
                    "APIVersions"
                } else {
                    "APIGroupList"
                };
                assert_eq!(body["kind"], kind, "{version} {path}: legacy fallback");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apiextensions_versions_and_crd_shapes() {
    for (version, versions, preferred) in [
        ("1.14", vec!["v1beta1"], "v1beta1"),
        ("1.19", vec!["v1", "v1beta1"], "v1"),
        ("1.22", vec!["v1"], "v1"),
    ] {
        let server = sim(version).await;
        let client = server.client();
        let (_, _, apis) = send(&client, get("/apis", "application/json")).await;
        let ext = apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "apiextensions.k8s.io")
            .unwrap()
            .clone();
        let listed: Vec<&str> = ext["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(listed, versions, "{version}");
        assert_eq!(ext["preferredVersion"]["version"], preferred);
        let (code, _, group) = send(&client, get("/apis/apiextensions.k8s.io", "")).await;
        assert_eq!(
            (code, group["preferredVersion"]["version"].as_str()),
            (200, Some(preferred))
        );
        for v in ["v1", "v1beta1"] {
            let served = versions.contains(&v);
            let path = format!(
                "/apis/apiextensions.k8s.io/{v}/customresourcedefinitions/destinationrules.networking.istio.io"
            );
            let (code, _, crd) = send(&client, get(&path, "")).await;
            assert_eq!(code, if served { 200 } else { 404 }, "{version} {v}");
            let (code, _, _) =
                send(&client, get(&format!("/apis/apiextensions.k8s.io/{v}"), "")).await;
            assert_eq!(code, if served { 200 } else { 404 }, "{version} {v}");
            if !served {
                continue;
            }
            assert_eq!(crd["apiVersion"], format!("apiextensions.k8s.io/{v}"));
            if v == "v1beta1" {
                // The modern DestinationRule CRD has several versions with one schema: hoisted.
                assert_eq!(crd["spec"]["version"], crd["spec"]["versions"][0]["name"]);
                assert!(
                    crd["spec"]["validation"]["openAPIV3Schema"].is_object(),
                    "{crd}"
                );
                assert!(crd["spec"]["versions"][0].get("schema").is_none());
                assert_eq!(
                    crd["spec"]["additionalPrinterColumns"][0]["JSONPath"],
                    ".spec.host"
                );
            } else {
                assert!(
                    crd["spec"].get("validation").is_none() && crd["spec"].get("version").is_none()
                );
                assert!(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].is_object());
            }
        }
    }

    // A v1beta1 CRD created through the API at 1.14 is served, read back at v1beta1, and its
    // kind works; at 1.19 the same object reads at v1 too.
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "version": "v1", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget"},
                 "validation": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}});
    for version in ["1.14", "1.19"] {
        let server = sim(version).await;
        let client = server.client();
        let (code, _, created) = send(
            &client,
            with_body(
                "POST",
                "/apis/apiextensions.k8s.io/v1beta1/customresourcedefinitions",
                "application/json",
                &crd,
            ),
        )
        .await;
        assert_eq!(code, 201, "{version}: {created}");
        assert_eq!(created["apiVersion"], "apiextensions.k8s.io/v1beta1");
        assert_eq!(created["spec"]["version"], "v1");
        assert_eq!(
            created["spec"]["validation"]["openAPIV3Schema"]["type"],
            "object"
        );
        assert_eq!(created["status"]["conditions"][1]["type"], "Established");
        let (code, _, w) = send(&client, with_body("POST", "/apis/example.com/v1/namespaces/default/widgets", "application/json",
            &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}))).await;
        assert_eq!((code, w["spec"]["size"].as_i64()), (201, Some(3)));
        // A merge patch at v1beta1 round-trips through the stored v1 shape.
        let (code, _, patched) = send(
            &client,
            with_body(
                "PATCH",
                "/apis/apiextensions.k8s.io/v1beta1/customresourcedefinitions/widgets.example.com",
                "application/merge-patch+json",
                &json!({"metadata": {"labels": {"x": "y"}}}),
            ),
        )
        .await;
        assert_eq!(
            (code, patched["metadata"]["labels"]["x"].as_str()),
            (200, Some("y"))
        );
        assert_eq!(
            patched["spec"]["validation"]["openAPIV3Schema"]["type"],
            "object"
        );
        // Writing back what was read at v1beta1 changes nothing.
        let (code, _, put) = send(
            &client,
            with_body(
                "PUT",
                "/apis/apiextensions.k8s.io/v1beta1/customresourcedefinitions/widgets.example.com",
                "application/json",
                &patched,
            ),
        )
        .await;
        assert_eq!(code, 200, "{version}: {put}");
        assert_eq!(
            put["metadata"]["resourceVersion"], patched["metadata"]["resourceVersion"],
            "{version}: a no-op write at v1beta1 kept the resourceVersion"
        );
        if version == "1.19" {
            let (code, _, v1) = send(
                &client,
                get(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
                    "",
                ),
            )
            .await;
            assert_eq!(code, 200);
            assert_eq!(
                v1["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["type"],
                "object"
            );
            assert_eq!(v1["metadata"]["labels"]["x"], "y");
        }
        let (code, _, list) = send(
            &client,
            get(
                "/apis/apiextensions.k8s.io/v1beta1/customresourcedefinitions",
                "",
            ),
        )
        .await;
        assert_eq!(code, 200);
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["apiVersion"] == "apiextensions.k8s.io/v1beta1"
                    && c["spec"]["version"].is_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn service_cidrs_and_openapi_v3_only_where_served() {
    let cidrs = |v: &str| format!("/apis/networking.k8s.io/{v}/servicecidrs");
    let server = sim("1.32").await;
    let client = server.client();
    assert_eq!(send(&client, get(&cidrs("v1"), "")).await.0, 404);
    let (_, _, apis) = send(&client, get("/apis", "application/json")).await;
    assert!(
        !apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "networking.k8s.io")
    );
    assert_eq!(send(&client, get("/openapi/v3", "")).await.0, 200);

    let server = sim("1.33").await;
    let (code, _, list) = send(&server.client(), get(&cidrs("v1"), "")).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"][0]["metadata"]["name"], "kubernetes");
    assert_eq!(list["items"][0]["spec"]["cidrs"], json!(["10.96.0.0/12"]));
    assert_eq!(
        send(&server.client(), get(&cidrs("v1beta1"), "")).await.0,
        404
    );

    // The runtime-config lever serves v1beta1 on 1.31 (and v1alpha1 on 1.29).
    for (v, gv) in [("1.31", "v1beta1"), ("1.29", "v1alpha1")] {
        let server = Server::start(Scenario::empty().with_kube_version(v).with_runtime_config(
            RuntimeConfig {
                service_cidr_beta: true,
            },
        ))
        .await;
        let (code, _, list) = send(&server.client(), get(&cidrs(gv), "")).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            list["items"][0]["apiVersion"],
            format!("networking.k8s.io/{gv}")
        );
        assert_eq!(send(&server.client(), get(&cidrs("v1"), "")).await.0, 404);
    }
    let server = sim("1.31").await;
    server.set_runtime_config(RuntimeConfig {
        service_cidr_beta: true,
    });
    assert_eq!(
        send(&server.client(), get(&cidrs("v1beta1"), "")).await.0,
        200
    );

    // OpenAPI v3: beta (on) from 1.24.
    for (v, code) in [("1.23", 404), ("1.24", 200)] {
        let server = sim(v).await;
        assert_eq!(
            send(&server.client(), get("/openapi/v3", "")).await.0,
            code,
            "{v}"
        );
        let (c2, _, _) = send(
            &server.client(),
            get(
                "/openapi/v2",
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            ),
        )
        .await;
        assert_eq!(c2, 200, "{v}: /openapi/v2 is always there");
    }
}

fn svc(ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe"},
           "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_ip_out_of_range_per_era() {
    let path = "/api/v1/namespaces/default/services";
    let dry = "/api/v1/namespaces/default/services?dryRun=All";
    let range = "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12";
    let alloc = "the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12";
    for (v, real, dry_run) in [
        ("1.14", format!("spec.clusterIP: Invalid value: \"1.1.1.1\": {range}"), None),
        ("1.19", format!("spec.clusterIP: Invalid value: \"1.1.1.1\": {range}"), None),
        ("1.20", format!("spec.clusterIPs: Invalid value: []string{{\"1.1.1.1\"}}: failed to allocated ip:1.1.1.1 with error:{range}"), None),
        ("1.22", format!("spec.clusterIPs: Invalid value: []string{{\"1.1.1.1\"}}: failed to allocated ip:1.1.1.1 with error:{range}"), None),
        ("1.23", format!("spec.clusterIPs: Invalid value: []string{{\"1.1.1.1\"}}: failed to allocate IP 1.1.1.1: {alloc}"),
            Some(format!("spec.clusterIPs: Invalid value: []string{{\"1.1.1.1\"}}: failed to allocate IP 1.1.1.1: {alloc}"))),
        ("1.32", format!("spec.clusterIPs: Invalid value: []string{{\"1.1.1.1\"}}: failed to allocate IP 1.1.1.1: {alloc}"),
            Some(format!("spec.clusterIPs: Invalid value: []string{{\"1.1.1.1\"}}: failed to allocate IP 1.1.1.1: {alloc}"))),
        ("1.33", "spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocate IP 1.1.1.1: the provided network does not match the current range".to_string(),
            Some(format!("spec.clusterIPs: Invalid value: []string{{\"1.1.1.1\"}}: failed to allocate IP 1.1.1.1: {alloc}"))),
        ("1.34", "spec.clusterIPs: Invalid value: [\"1.1.1.1\"]: failed to allocate IP 1.1.1.1: the provided network does not match the current range".to_string(),
            Some(format!("spec.clusterIPs: Invalid value: [\"1.1.1.1\"]: failed to allocate IP 1.1.1.1: {alloc}"))),
    ] {
        let server = sim(v).await;
        let client = server.client();
        let (code, _, body) = send(&client, with_body("POST", path, "application/json", &svc("1.1.1.1"))).await;
        assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")), "{v}");
        assert_eq!(body["message"], format!("Service \"probe\" is invalid: {real}"), "{v}");
        assert_eq!(body["details"]["causes"][0]["field"], real.split(':').next().unwrap());
        let (code, _, body) = send(&client, with_body("POST", dry, "application/json", &svc("1.1.1.1"))).await;
        match &dry_run {
            None => {
                // The dry-run create allocates nothing, so nothing is checked.
                assert_eq!(code, 201, "{v}: {body}");
                assert_eq!(body["spec"]["clusterIP"], "1.1.1.1");
            }
            Some(text) => {
                assert_eq!(code, 422, "{v}");
                assert_eq!(body["message"], format!("Service \"probe\" is invalid: {text}"), "{v}");
            }
        }
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        assert!(svcs.get_opt("probe").await.unwrap().is_none(), "{v}: nothing stored");
        // An in-range request is allocated as asked; a second taker is refused.
        let (code, _, body) = send(&client, with_body("POST", path, "application/json", &svc("10.96.7.7"))).await;
        assert_eq!((code, body["spec"]["clusterIP"].as_str()), (201, Some("10.96.7.7")), "{v}");
        let mut taken = svc("10.96.7.7");
        taken["metadata"]["name"] = json!("second");
        let (code, _, body) = send(&client, with_body("POST", path, "application/json", &taken)).await;
        assert_eq!(code, 422, "{v}");
        assert!(body["message"].as_str().unwrap().ends_with("provided IP is already allocated"), "{v}: {body}");
    }
    // A dry run before 1.23 without a clusterIP allocates none.
    let server = sim("1.22").await;
    let mut none = svc("");
    none["spec"].as_object_mut().unwrap().remove("clusterIP");
    let (code, _, body) = send(
        &server.client(),
        with_body("POST", dry, "application/json", &none),
    )
    .await;
    assert_eq!((code, body["spec"].get("clusterIP")), (201, None));
    // The ServiceCIDR lever turns the MultiCIDR allocator on for 1.31.
    let server = Server::start(
        Scenario::empty()
            .with_kube_version("1.31")
            .with_runtime_config(RuntimeConfig {
                service_cidr_beta: true,
            }),
    )
    .await;
    let (_, _, body) = send(
        &server.client(),
        with_body("POST", path, "application/json", &svc("1.1.1.1")),
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("the provided network does not match the current range")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_carry_the_deprecation_warning_from_1_33() {
    let want =
        "299 - \"v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice\"";
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "vm"},
                    "subsets": [{"addresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}]});
    for (v, warned) in [("1.32", false), ("1.33", true)] {
        let server = sim(v).await;
        let client = server.client();
        let requests = [
            with_body(
                "POST",
                "/api/v1/namespaces/default/endpoints",
                "application/json",
                &ep,
            ),
            get("/api/v1/namespaces/default/endpoints/vm", ""),
            get("/api/v1/endpoints", KUBECTL_TABLE),
            get("/api/v1/namespaces/default/endpoints/nope", ""),
            with_body(
                "PATCH",
                "/api/v1/namespaces/default/endpoints/vm",
                "application/merge-patch+json",
                &json!({"metadata": {"labels": {"a": "b"}}}),
            ),
        ];
        for req in requests {
            let what = format!("{v} {} {}", req.method(), req.uri());
            let (_, headers, _) = send(&client, req).await;
            let got: Vec<&str> = headers
                .get_all("warning")
                .iter()
                .map(|h| h.to_str().unwrap())
                .collect();
            if warned {
                assert_eq!(got, [want], "{what}");
            } else {
                assert!(got.is_empty(), "{what}: {got:?}");
            }
        }
        let (_, headers, _) = send(&client, get("/api/v1/namespaces/default/configmaps", "")).await;
        assert!(
            headers.get("warning").is_none(),
            "{v}: only Endpoints are deprecated"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn defaulting_follows_the_version() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vms"}});
    let plain = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"}, "spec": {"ports": [{"port": 80}]}});
    for (v, label, cluster_ips, families, itp) in [
        ("1.19", false, false, false, false),
        ("1.20", false, true, false, false),
        ("1.21", true, true, true, false),
        ("1.22", true, true, true, true),
    ] {
        let server = sim(v).await;
        let client = server.client();
        let (code, _, created) = send(
            &client,
            with_body("POST", "/api/v1/namespaces", "application/json", &ns),
        )
        .await;
        assert_eq!(code, 201);
        assert_eq!(
            created["metadata"]["labels"]["kubernetes.io/metadata.name"].is_string(),
            label,
            "{v}"
        );
        // Namespaces the sim starts with follow the same rule.
        let (_, _, system) = send(&client, get("/api/v1/namespaces/kube-system", "")).await;
        assert_eq!(
            system["metadata"]["labels"]["kubernetes.io/metadata.name"].is_string(),
            label,
            "{v}"
        );
        let (code, _, s) = send(
            &client,
            with_body(
                "POST",
                "/api/v1/namespaces/vms/services",
                "application/json",
                &plain,
            ),
        )
        .await;
        assert_eq!(code, 201);
        let spec = &s["spec"];
        assert!(
            spec["clusterIP"].as_str().unwrap().starts_with("10."),
            "{v}"
        );
        assert_eq!(spec.get("clusterIPs").is_some(), cluster_ips, "{v}: {spec}");
        assert_eq!(spec.get("ipFamilies").is_some(), families, "{v}: {spec}");
        assert_eq!(
            spec.get("ipFamilyPolicy").is_some(),
            families,
            "{v}: {spec}"
        );
        assert_eq!(
            spec.get("internalTrafficPolicy").is_some(),
            itp,
            "{v}: {spec}"
        );
        if families {
            assert_eq!(
                (spec["ipFamilies"].clone(), spec["ipFamilyPolicy"].clone()),
                (json!(["IPv4"]), json!("SingleStack"))
            );
        }
        // Changing the IP: `spec.clusterIP` immutable before the dual-stack fields, then `clusterIPs[0]`.
        let (code, _, e) = send(
            &client,
            with_body(
                "PATCH",
                "/api/v1/namespaces/vms/services/app",
                "application/merge-patch+json",
                &json!({"spec": {"clusterIP": "10.96.99.99", "clusterIPs": ["10.96.99.99"]}}),
            ),
        )
        .await;
        assert_eq!(code, 422);
        let field = if cluster_ips {
            "spec.clusterIPs[0]"
        } else {
            "spec.clusterIP"
        };
        assert_eq!(e["details"]["causes"][0]["field"], field, "{v}");
    }
}
