use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use super::*;
use crate::istio::IstioKind;

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub accept: String,
    pub body: Value,
}

impl Req {
    /// The value of one query parameter.
    pub(crate) fn param(&self, key: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.replace("%3D", "=").replace("%2F", "/"))
    }
}

/// A scripted API server: `route` answers each request with a status code and a JSON body.
/// Returns a connection over it and the log of `METHOD path?query` lines.
pub(crate) fn mock(
    route: impl Fn(&Req) -> (u16, Value) + Send + Sync + 'static,
) -> (Connection, Arc<Mutex<Vec<String>>>) {
    use http_body_util::BodyExt as _;
    let log = Arc::new(Mutex::new(Vec::new()));
    let route = Arc::new(route);
    let seen = log.clone();
    let service = tower::service_fn(move |req: http::Request<::kube::client::Body>| {
        let route = route.clone();
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            let r = Req {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                accept: parts
                    .headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            seen.lock()
                .unwrap()
                .push(format!("{} {}?{}", r.method, r.path, r.query));
            let (code, answer) = route(&r);
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(::kube::client::Body::from(answer.to_string().into_bytes()))
                    .unwrap(),
            )
        }
    });
    let client = ::kube::Client::new(service, "default");
    (
        Connection::from_client(client, "default", "https://mock"),
        log,
    )
}

/// A `Status` answer, as the API server writes them.
pub(crate) fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// Discovery documents for an API group as the apiextensions discovery controller writes them
/// from a release's CRDs: versions sorted by Kubernetes' version order, the first preferred
/// (k8s.io/apiextensions-apiserver@kubernetes-1.19.0
/// pkg/apiserver/customresource_discovery_controller.go:176-183).
fn discovery_from_crds(file: &str, group: &str) -> (APIGroup, Vec<(String, APIResourceList)>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/releases")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut by_version: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition" && d["spec"]["group"] == group)
    {
        for v in d["spec"]["versions"].as_array().unwrap() {
            if v["served"] == true {
                by_version
                    .entry(v["name"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(json!({"name": d["spec"]["names"]["plural"], "singularName": d["spec"]["names"]["singular"],
                                 "namespaced": d["spec"]["scope"] == "Namespaced", "kind": d["spec"]["names"]["kind"],
                                 "verbs": ["get", "list"]}));
                by_version.get_mut(v["name"].as_str().unwrap()).unwrap().push(
                    json!({"name": format!("{}/status", d["spec"]["names"]["plural"].as_str().unwrap()),
                           "singularName": "", "namespaced": true, "kind": d["spec"]["names"]["kind"], "verbs": ["get"]}),
                );
            }
        }
    }
    let mut versions: Vec<String> = by_version.keys().cloned().collect();
    versions.sort_by(|a, b| compare_versions(b, a));
    let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    let group_doc: APIGroup = serde_json::from_value(json!({
        "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(&versions[0]),
    }))
    .unwrap();
    let lists = by_version
        .into_iter()
        .map(|(v, resources)| {
            let list: APIResourceList = serde_json::from_value(
                json!({"groupVersion": format!("{group}/{v}"), "resources": resources}),
            )
            .unwrap();
            (v, list)
        })
        .collect();
    (group_doc, lists)
}

fn discovered(file: &str, group: &str) -> GroupDiscovery {
    let (doc, lists) = discovery_from_crds(file, group);
    GroupDiscovery::from_documents(
        group,
        Some(&doc),
        lists.into_iter().map(|(v, l)| (v, Some(l))),
    )
}

#[test]
fn versions_sort_as_kubernetes_sorts_them() {
    let mut v = vec![
        "v1alpha3", "foo", "v1", "v1beta1", "v2beta2", "v2", "v1beta10", "bar",
    ];
    v.sort_by(|a, b| compare_versions(b, a));
    assert_eq!(
        v,
        [
            "v2", "v1", "v2beta2", "v1beta10", "v1beta1", "v1alpha3", "bar", "foo"
        ]
    );
    assert_eq!(compare_versions("v1", "v1"), Ordering::Equal);
    assert_eq!(
        compare_versions("v1beta", "v1alpha1"),
        Ordering::Less,
        "v1beta is no Kubernetes version"
    );
}

/// Each release of the matrix, from its own CRDs: the group's preferred version is not always
/// where WorkloadGroup is (Istio 1.8 and 1.12).
#[test]
fn each_release_serves_each_kind_where_its_crds_say() {
    let wg = IstioKind::WorkloadGroup.kind_ref();
    let we = IstioKind::WorkloadEntry.kind_ref();
    let dr = IstioKind::DestinationRule.kind_ref();
    let pa = IstioKind::PeerAuthentication.kind_ref();
    let cases = [
        (
            "istio-api-1.8.0",
            "v1beta1",
            "v1alpha3",
            "v1beta1",
            "v1beta1",
        ),
        (
            "istio-api-1.12.0",
            "v1beta1",
            "v1alpha3",
            "v1beta1",
            "v1beta1",
        ),
        (
            "istio-api-1.13.0",
            "v1beta1",
            "v1beta1",
            "v1beta1",
            "v1beta1",
        ),
        // 1.22 stores v1beta1 but serves v1 too; v1 is the highest, so preferred.
        ("istio-api-1.22.0", "v1", "v1", "v1", "v1"),
    ];
    for (release, preferred, wg_at, dr_at, pa_at) in cases {
        let file = format!("{release}/customresourcedefinitions.gen.yaml");
        let net = discovered(&file, "networking.istio.io");
        assert_eq!(net.preferred.as_deref(), Some(preferred), "{release}");
        assert_eq!(
            net.pick(&wg),
            Served::At(wg_at.into()),
            "{release}: WorkloadGroup"
        );
        assert_eq!(
            net.pick(&we),
            Served::At(preferred.into()),
            "{release}: WorkloadEntry"
        );
        assert_eq!(
            net.pick(&dr),
            Served::At(dr_at.into()),
            "{release}: DestinationRule"
        );
        let sec = discovered(&file, "security.istio.io");
        assert_eq!(
            sec.pick(&pa),
            Served::At(pa_at.into()),
            "{release}: PeerAuthentication"
        );
    }
}

/// `GET /apis/networking.istio.io` and its version lists on Istio 1.8, as the server answers.
const ISTIO_18_GROUP: &str = r#"{"kind":"APIGroup","apiVersion":"v1","name":"networking.istio.io",
 "versions":[{"groupVersion":"networking.istio.io/v1beta1","version":"v1beta1"},
             {"groupVersion":"networking.istio.io/v1alpha3","version":"v1alpha3"}],
 "preferredVersion":{"groupVersion":"networking.istio.io/v1beta1","version":"v1beta1"}}"#;
const ISTIO_18_V1BETA1: &str = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"networking.istio.io/v1beta1",
 "resources":[{"name":"workloadentries","singularName":"workloadentry","namespaced":true,"kind":"WorkloadEntry","verbs":["get","list"],"shortNames":["we"]},
              {"name":"workloadentries/status","singularName":"","namespaced":true,"kind":"WorkloadEntry","verbs":["get"]},
              {"name":"destinationrules","singularName":"destinationrule","namespaced":true,"kind":"DestinationRule","verbs":["get","list"]}]}"#;
const ISTIO_18_V1ALPHA3: &str = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"networking.istio.io/v1alpha3",
 "resources":[{"name":"workloadgroups","singularName":"workloadgroup","namespaced":true,"kind":"WorkloadGroup","verbs":["get","list"],"shortNames":["wg"]},
              {"name":"workloadgroups/status","singularName":"","namespaced":true,"kind":"WorkloadGroup","verbs":["get"]},
              {"name":"workloadentries","singularName":"workloadentry","namespaced":true,"kind":"WorkloadEntry","verbs":["get","list"]},
              {"name":"destinationrules","singularName":"destinationrule","namespaced":true,"kind":"DestinationRule","verbs":["get","list"]}]}"#;

fn istio_18_route(r: &Req) -> (u16, Value) {
    match r.path.as_str() {
        "/apis/networking.istio.io" => (200, serde_json::from_str(ISTIO_18_GROUP).unwrap()),
        "/apis/networking.istio.io/v1beta1" => {
            (200, serde_json::from_str(ISTIO_18_V1BETA1).unwrap())
        }
        "/apis/networking.istio.io/v1alpha3" => {
            (200, serde_json::from_str(ISTIO_18_V1ALPHA3).unwrap())
        }
        _ => (404, json!("404 page not found")),
    }
}

#[test]
fn canned_istio_18_discovery_picks_v1alpha3_for_workload_groups() {
    let doc: APIGroup = serde_json::from_str(ISTIO_18_GROUP).unwrap();
    let lists = [
        ("v1", None),
        (
            "v1beta1",
            Some(serde_json::from_str(ISTIO_18_V1BETA1).unwrap()),
        ),
        (
            "v1alpha3",
            Some(serde_json::from_str(ISTIO_18_V1ALPHA3).unwrap()),
        ),
    ]
    .map(|(v, l)| (v.to_owned(), l));
    let d = GroupDiscovery::from_documents("networking.istio.io", Some(&doc), lists);
    assert_eq!(
        d.pick(&IstioKind::WorkloadGroup.kind_ref()),
        Served::At("v1alpha3".into())
    );
    assert_eq!(
        d.pick(&IstioKind::WorkloadEntry.kind_ref()),
        Served::At("v1beta1".into()),
        "the preferred version, when it has the kind"
    );
    let Served::Not(why) = d.pick(&IstioKind::ServiceEntry.kind_ref()) else {
        panic!("serviceentries is in no list")
    };
    assert_eq!(
        why,
        "networking.istio.io serves v1beta1, v1alpha3, but none of those versions has serviceentries"
    );
    let absent = GroupDiscovery::from_documents("security.istio.io", None, []);
    assert_eq!(
        absent.pick(&IstioKind::PeerAuthentication.kind_ref()),
        Served::Not(
            "the cluster does not serve the API group security.istio.io (its CRDs are not installed)"
                .into()
        )
    );
}

#[test]
fn a_kind_served_only_at_an_unknown_version_is_not_picked() {
    let doc: APIGroup = serde_json::from_value(json!({"name": "networking.istio.io",
        "versions": [{"groupVersion": "networking.istio.io/v2", "version": "v2"}],
        "preferredVersion": {"groupVersion": "networking.istio.io/v2", "version": "v2"}}))
    .unwrap();
    let list: APIResourceList = serde_json::from_value(json!({"groupVersion": "networking.istio.io/v2",
        "resources": [{"name": "workloadgroups", "singularName": "", "namespaced": true, "kind": "WorkloadGroup", "verbs": []}]}))
    .unwrap();
    let d = GroupDiscovery::from_documents(
        "networking.istio.io",
        Some(&doc),
        [("v2".to_owned(), Some(list))],
    );
    let Served::Not(why) = d.pick(&IstioKind::WorkloadGroup.kind_ref()) else {
        panic!("v2 is not a version meshvm speaks")
    };
    assert!(
        why.contains("only at networking.istio.io.v2") || why.contains("v2"),
        "{why}"
    );
}

#[tokio::test]
async fn discovery_is_one_round_trip_and_asked_once_per_connection() {
    let (conn, log) = mock(istio_18_route);
    let (wg, we) = tokio::join!(
        IstioKind::WorkloadGroup.served_version(&conn),
        IstioKind::WorkloadEntry.served_version(&conn)
    );
    assert_eq!(wg.unwrap().as_deref(), Some("v1alpha3"));
    assert_eq!(we.unwrap().as_deref(), Some("v1beta1"));
    assert_eq!(
        IstioKind::DestinationRule
            .served_version(&conn)
            .await
            .unwrap()
            .as_deref(),
        Some("v1beta1")
    );
    let mut seen = log.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "GET /apis/networking.istio.io/v1?",
            "GET /apis/networking.istio.io/v1alpha3?",
            "GET /apis/networking.istio.io/v1beta1?",
            "GET /apis/networking.istio.io?",
        ],
        "the group and each version meshvm speaks, once"
    );
    // A clone of the connection shares what was learnt.
    let again = conn.clone();
    assert_eq!(
        IstioKind::WorkloadGroup
            .served_version(&again)
            .await
            .unwrap()
            .as_deref(),
        Some("v1alpha3")
    );
    assert_eq!(log.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn discovery_errors_other_than_404_are_reported() {
    let (conn, _) = mock(|_| status(403, "Forbidden", "discovery is forbidden"));
    let err = IstioKind::WorkloadGroup
        .served_version(&conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "istio-system"}})
}

fn list(items: &[Value], next: Option<&str>) -> (u16, Value) {
    (
        200,
        json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
               "metadata": {"continue": next.unwrap_or("")}, "items": items}),
    )
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

#[tokio::test]
async fn an_expired_continue_token_restarts_the_list_once() {
    let expired_once = Arc::new(Mutex::new(false));
    let flag = expired_once.clone();
    let (conn, log) = mock(move |r| match r.param("continue").as_deref() {
        None => list(&[deployment("a")], Some("t1")),
        Some("t1") => {
            let mut done = flag.lock().unwrap();
            if *done {
                list(&[deployment("b")], None)
            } else {
                *done = true;
                status(410, "Expired", CONTINUE_EXPIRED)
            }
        }
        Some(other) => panic!("unexpected token {other}"),
    });
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), "istio-system");
    let names = list_all(
        &conn,
        &api,
        Request::new("list", "deployments.apps").ns("istio-system"),
        &ListParams::default(),
        |d| d.metadata.name,
    )
    .await
    .unwrap();
    assert_eq!(names, ["a", "b"], "the first page is not kept twice");
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log.iter().all(|l| l.contains("limit=500")), "{log:?}");
}

#[tokio::test]
async fn a_continue_token_that_expires_again_is_a_clear_error() {
    let (conn, log) = mock(|r| match r.param("continue") {
        None => list(&[deployment("a")], Some("t1")),
        Some(_) => status(410, "Expired", CONTINUE_EXPIRED),
    });
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), "istio-system");
    let err = list_all(
        &conn,
        &api,
        Request::new("list", "deployments.apps").ns("istio-system"),
        &ListParams::default(),
        Some,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::ListExpired { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "failed to list deployments.apps in namespace istio-system: the list changed faster than it could be read page by page (its continue token expired twice, 410 Expired)"
    );
    assert!(
        crate::errors::Diagnose::hint(&err)
            .unwrap()
            .contains("again")
    );
    assert_eq!(
        log.lock().unwrap().len(),
        4,
        "first page, expired, first page, expired"
    );
}

#[tokio::test]
async fn a_410_on_the_first_page_is_not_retried() {
    let (conn, log) = mock(|_| {
        status(
            410,
            "Expired",
            "The resourceVersion for the provided list is too old.",
        )
    });
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), "istio-system");
    let err = list_all(
        &conn,
        &api,
        Request::new("list", "deployments.apps"),
        &ListParams::default(),
        Some,
    )
    .await
    .unwrap_err();
    assert!(err.is_gone(), "{err}");
    assert_eq!(log.lock().unwrap().len(), 1);
}

const METADATA_ACCEPT: &str = "as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// Kubernetes 1.14: a `meta.k8s.io/v1` metadata list is not a conversion it makes
/// (apiserver@kubernetes-1.14.0 pkg/endpoints/handlers/rest.go:82-96), so it skips such a clause
/// of `Accept` and takes the next (negotiation/negotiate.go:260-287): a plain JSON clause gets the
/// full list; with none left, 406 (negotiate.go:46-49).
fn k8s_114(r: &Req) -> (u16, Value) {
    let plain_json = r.accept.split(',').any(|clause| {
        let mut parts = clause.split(';').map(str::trim);
        parts.next() == Some("application/json") && parts.all(|p| !p.starts_with("as="))
    });
    if r.accept.contains(METADATA_ACCEPT) && !plain_json {
        return status(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        );
    }
    match r.param("continue").as_deref() {
        None => list(&[deployment("istio-citadel")], Some("t1")),
        _ => list(&[deployment("istio-pilot")], None),
    }
}

#[tokio::test]
async fn metadata_lists_take_full_lists_in_the_same_request_before_1_15() {
    let (conn, log) = mock(k8s_114);
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), "istio-system");
    for _ in 0..2 {
        let metas = list_metadata(
            &conn,
            &api,
            Request::new("list", "deployments.apps").ns("istio-system"),
            &ListParams::default(),
        )
        .await
        .unwrap();
        let names: Vec<_> = metas.iter().filter_map(|m| m.name.as_deref()).collect();
        assert_eq!(names, ["istio-citadel", "istio-pilot"]);
    }
    assert!(conn.memo::<Cache>().metadata_lists_refused());
    // No refusal: 2 pages + 2 pages.
    assert_eq!(log.lock().unwrap().len(), 4, "{:?}", log.lock().unwrap());
    // Era detection rides on it.
    assert_eq!(
        crate::istio::detect_era(&conn, "istio-system")
            .await
            .unwrap(),
        Some(crate::istio::Era::Legacy)
    );
}

/// Callers that want the full objects where metadata is not served still learn it from the 406
/// of a metadata-only `Accept` — or from an earlier metadata list of the connection, without a
/// request.
#[tokio::test]
async fn try_list_metadata_still_asks_for_metadata_alone() {
    let (conn, log) = mock(k8s_114);
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), "istio-system");
    let action = || Request::new("list", "deployments.apps").ns("istio-system");
    let got = try_list_metadata(&conn, &api, action(), &ListParams::default())
        .await
        .unwrap();
    assert!(got.is_none());
    assert_eq!(log.lock().unwrap().len(), 1);

    let (conn, log) = mock(k8s_114);
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), "istio-system");
    list_metadata(&conn, &api, action(), &ListParams::default())
        .await
        .unwrap();
    let before = log.lock().unwrap().len();
    let got = try_list_metadata(&conn, &api, action(), &ListParams::default())
        .await
        .unwrap();
    assert!(got.is_none());
    assert_eq!(log.lock().unwrap().len(), before, "known: not asked again");
}

#[test]
fn server_versions_parse_as_providers_write_them() {
    assert_eq!(
        ServerVersion::parse("1", "14+"),
        Some(ServerVersion {
            major: 1,
            minor: 14
        })
    );
    assert_eq!(
        ServerVersion::parse("1", "33").map(|v| v.to_string()),
        Some("1.33".into())
    );
    assert_eq!(ServerVersion::parse("", "16"), None);
    let v = ServerVersion::parse("1", "16").unwrap();
    assert!(v.at_least(16) && !v.at_least(17));
    assert!(ServerVersion::parse("2", "0").unwrap().at_least(40));
}

#[tokio::test]
async fn the_server_version_is_read_once_per_connection() {
    let (conn, log) = mock(|r| {
        assert_eq!(r.path, "/version");
        (
            200,
            json!({"major": "1", "minor": "16", "gitVersion": "v1.16.0"}),
        )
    });
    assert_eq!(known_server_version(&conn), None);
    for _ in 0..2 {
        assert_eq!(
            server_version_if_readable(&conn).await.map(|v| v.minor),
            Some(16)
        );
    }
    assert_eq!(
        known_server_version(&conn.clone()).map(|v| v.minor),
        Some(16)
    );
    assert_eq!(log.lock().unwrap().len(), 1);

    // Unreadable: nothing is known, and the caller goes on.
    let (conn, _log) = mock(|_| status(403, "Forbidden", "version is forbidden"));
    assert_eq!(server_version_if_readable(&conn).await, None);
    assert_eq!(known_server_version(&conn), None);
}

#[tokio::test]
async fn metadata_lists_are_used_where_served() {
    let (conn, log) = mock(|r| {
        assert!(r.accept.contains(METADATA_ACCEPT), "{}", r.accept);
        (
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {},
                   "items": [{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "istiod"}}]}),
        )
    });
    let api: Api<Deployment> = Api::namespaced(conn.client.clone(), "istio-system");
    let metas = list_metadata(
        &conn,
        &api,
        Request::new("list", "deployments.apps"),
        &ListParams::default(),
    )
    .await
    .unwrap();
    assert_eq!(metas[0].name.as_deref(), Some("istiod"));
    assert!(!conn.memo::<Cache>().metadata_lists_refused());
    assert_eq!(log.lock().unwrap().len(), 1);
}
