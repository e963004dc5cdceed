//! RBAC for extra users (`--user`, `Scenario::with_user`): Roles, ClusterRoles and their
//! bindings stored in the sim decide, the 403s read as kube-apiserver's, discovery is granted
//! by the bootstrap policy, real kubectl sees the same; and the request log file.

use std::path::Path;
use std::process::{Command, Output};

use http_body_util::BodyExt as _;
use kube_sim::{Scenario, Server, ServerOptions};
use serde_json::{Value, json};

async fn raw(client: &kube::Client, req: http::Request<Vec<u8>>) -> (u16, Value) {
    let (status, _, body) = crate::raw(client, req).await;
    (
        status,
        serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body))),
    )
}

fn get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(Vec::new()).unwrap()
}

fn post(path: &str, body: &Value) -> http::Request<Vec<u8>> {
    http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap()
}

/// A client for the kubeconfig context `user`.
async fn client_as(server: &Server, user: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some(user.to_string()),
        ..Default::default()
    };
    kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap(),
    )
    .unwrap()
}

fn rbac(kind: &str, ns: Option<&str>, name: &str, body: Value) -> Value {
    let mut o = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                       "metadata": {"name": name}});
    if let Some(ns) = ns {
        o["metadata"]["namespace"] = json!(ns);
    }
    if let Value::Object(fields) = body {
        o.as_object_mut().unwrap().extend(fields);
    }
    o
}

fn role_ref(kind: &str, name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})
}

fn secret(ns: &str, name: &str, ty: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
           "type": ty, "data": {"k": "dg=="}})
}

/// Namespaces `allowed` and `other`, each with an Opaque secret and an `istio.default` key-and-cert
/// secret; user `auditor` bound (RoleBinding) to a Role `secret-reader` (get, list secrets) in
/// `allowed` only.
fn auditor_scenario() -> Scenario {
    Scenario::empty().with_user("auditor").with_objects(vec![
        secret("allowed", "plain", "Opaque"),
        secret("allowed", "istio.default", "istio.io/key-and-cert"),
        secret("other", "plain", "Opaque"),
        secret("other", "istio.default", "istio.io/key-and-cert"),
        rbac(
            "Role",
            Some("allowed"),
            "secret-reader",
            json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}),
        ),
        rbac(
            "RoleBinding",
            Some("allowed"),
            "auditor-reads",
            json!({"roleRef": role_ref("Role", "secret-reader"),
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "auditor"}]}),
        ),
    ])
}

fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    n.sort();
    n
}

/// The 403 body the apiserver writes (`metav1.Status`, reason Forbidden).
fn assert_forbidden(code: u16, body: &Value, message: &str, details: &Value) {
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        (
            &body["kind"],
            &body["apiVersion"],
            &body["status"],
            &body["reason"],
            &body["code"]
        ),
        (
            &json!("Status"),
            &json!("v1"),
            &json!("Failure"),
            &json!("Forbidden"),
            &json!(403)
        ),
        "{body}"
    );
    assert_eq!(body["message"], message);
    assert_eq!(&body["details"], details);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_scopes_reads_to_its_namespace_and_verbs() {
    let server = Server::start(auditor_scenario()).await;
    let auditor = client_as(&server, "auditor").await;
    let (code, list) = raw(&auditor, get("/api/v1/namespaces/allowed/secrets")).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), ["allowed/istio.default", "allowed/plain"]);
    // RBAC is per verb and resource, not per selector: field selectors still work.
    let (code, list) = raw(
        &auditor,
        get("/api/v1/namespaces/allowed/secrets?fieldSelector=type%3Distio.io%2Fkey-and-cert"),
    )
    .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), ["allowed/istio.default"]);
    let (code, s) = raw(&auditor, get("/api/v1/namespaces/allowed/secrets/plain")).await;
    assert_eq!((code, &s["metadata"]["name"]), (200, &json!("plain")));

    let (code, body) = raw(&auditor, get("/api/v1/namespaces/other/secrets")).await;
    assert_forbidden(
        code,
        &body,
        "secrets is forbidden: User \"auditor\" cannot list resource \"secrets\" in API group \"\" in the namespace \"other\"",
        &json!({"kind": "secrets"}),
    );
    let (code, body) = raw(&auditor, get("/api/v1/secrets")).await;
    assert_forbidden(
        code,
        &body,
        "secrets is forbidden: User \"auditor\" cannot list resource \"secrets\" in API group \"\" at the cluster scope",
        &json!({"kind": "secrets"}),
    );
    let (code, body) = raw(&auditor, get("/api/v1/namespaces/other/secrets/plain")).await;
    assert_forbidden(
        code,
        &body,
        "secrets \"plain\" is forbidden: User \"auditor\" cannot get resource \"secrets\" in API group \"\" in the namespace \"other\"",
        &json!({"kind": "secrets", "name": "plain"}),
    );
    // Verbs the Role does not list: watch, delete; subresources are their own resource.
    let (code, body) = raw(
        &auditor,
        get("/api/v1/namespaces/allowed/secrets?watch=true"),
    )
    .await;
    assert_forbidden(
        code,
        &body,
        "secrets is forbidden: User \"auditor\" cannot watch resource \"secrets\" in API group \"\" in the namespace \"allowed\"",
        &json!({"kind": "secrets"}),
    );
    let req = http::Request::delete("/api/v1/namespaces/allowed/secrets/plain")
        .body(Vec::new())
        .unwrap();
    let (code, body) = raw(&auditor, req).await;
    assert_forbidden(
        code,
        &body,
        "secrets \"plain\" is forbidden: User \"auditor\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"allowed\"",
        &json!({"kind": "secrets", "name": "plain"}),
    );
    let (code, body) = raw(
        &auditor,
        post(
            "/api/v1/namespaces/allowed/serviceaccounts/default/token",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
        ),
    )
    .await;
    assert_forbidden(
        code,
        &body,
        "serviceaccounts \"default\" is forbidden: User \"auditor\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"allowed\"",
        &json!({"kind": "serviceaccounts", "name": "default"}),
    );
    // The admin is not restricted.
    let (code, list) = raw(&server.client(), get("/api/v1/secrets")).await;
    assert_eq!(code, 200);
    assert!(names(&list).contains(&"other/plain".to_string()));
    // A subresource rule grants exactly that subresource; the grant applies at once.
    server
        .load([
            rbac(
                "Role",
                Some("allowed"),
                "token-maker",
                json!({"rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]}),
            ),
            rbac(
                "RoleBinding",
                Some("allowed"),
                "token-maker",
                json!({"roleRef": role_ref("Role", "token-maker"),
                       "subjects": [{"kind": "User", "name": "auditor"}]}),
            ),
        ])
        .unwrap();
    let (code, tr) = raw(
        &auditor,
        post(
            "/api/v1/namespaces/allowed/serviceaccounts/default/token",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
        ),
    )
    .await;
    assert_eq!((code, &tr["kind"]), (201, &json!("TokenRequest")));
    let (code, _) = raw(
        &auditor,
        get("/api/v1/namespaces/allowed/serviceaccounts/default"),
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn resource_names_limit_gets_and_forbid_unnamed_lists() {
    let server = Server::start(auditor_scenario().with_objects(vec![
        secret("istio-system", "cacerts", "Opaque"),
        secret("istio-system", "istio-ca-secret", "istio.io/ca-root"),
        rbac(
            "ClusterRole",
            None,
            "cacerts-reader",
            json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["cacerts"],
                              "verbs": ["get", "list", "watch"]}]}),
        ),
        rbac(
            "RoleBinding",
            Some("istio-system"),
            "cacerts-reader",
            json!({"roleRef": role_ref("ClusterRole", "cacerts-reader"),
                   "subjects": [{"kind": "User", "name": "auditor"}]}),
        ),
    ]))
    .await;
    let auditor = client_as(&server, "auditor").await;
    let (code, s) = raw(
        &auditor,
        get("/api/v1/namespaces/istio-system/secrets/cacerts"),
    )
    .await;
    assert_eq!((code, &s["metadata"]["name"]), (200, &json!("cacerts")));
    let (code, body) = raw(
        &auditor,
        get("/api/v1/namespaces/istio-system/secrets/istio-ca-secret"),
    )
    .await;
    assert_forbidden(
        code,
        &body,
        "secrets \"istio-ca-secret\" is forbidden: User \"auditor\" cannot get resource \"secrets\" in API group \"\" in the namespace \"istio-system\"",
        &json!({"kind": "secrets", "name": "istio-ca-secret"}),
    );
    // A list names no object, so a resourceNames-only grant does not cover it ...
    let (code, body) = raw(&auditor, get("/api/v1/namespaces/istio-system/secrets")).await;
    assert_forbidden(
        code,
        &body,
        "secrets is forbidden: User \"auditor\" cannot list resource \"secrets\" in API group \"\" in the namespace \"istio-system\"",
        &json!({"kind": "secrets"}),
    );
    // ... unless its field selector requires the name, which the apiserver takes as the name.
    let (code, list) = raw(
        &auditor,
        get("/api/v1/namespaces/istio-system/secrets?fieldSelector=metadata.name%3Dcacerts"),
    )
    .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), ["istio-system/cacerts"]);
    let (code, body) = raw(
        &auditor,
        get(
            "/api/v1/namespaces/istio-system/secrets?fieldSelector=metadata.name%3Distio-ca-secret",
        ),
    )
    .await;
    assert_forbidden(
        code,
        &body,
        "secrets \"istio-ca-secret\" is forbidden: User \"auditor\" cannot list resource \"secrets\" in API group \"\" in the namespace \"istio-system\"",
        &json!({"kind": "secrets", "name": "istio-ca-secret"}),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_role_binding_to_the_authenticated_group_and_missing_roles() {
    let server = Server::start(Scenario::empty().with_user("auditor").with_user("other")).await;
    let auditor = client_as(&server, "auditor").await;
    let (code, body) = raw(&auditor, get("/api/v1/namespaces")).await;
    assert_forbidden(
        code,
        &body,
        "namespaces is forbidden: User \"auditor\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
        &json!({"kind": "namespaces"}),
    );
    // A binding to a role that does not exist: the 403 says so, as RBAC's reason.
    server
        .load([rbac(
            "ClusterRoleBinding",
            None,
            "ns-readers",
            json!({"roleRef": role_ref("ClusterRole", "ns-reader"),
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}),
        )])
        .unwrap();
    let (code, body) = raw(&auditor, get("/api/v1/namespaces")).await;
    assert_forbidden(
        code,
        &body,
        "namespaces is forbidden: User \"auditor\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io \"ns-reader\" not found",
        &json!({"kind": "namespaces"}),
    );
    server
        .load([rbac(
            "ClusterRole",
            None,
            "ns-reader",
            json!({"rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "get"]}]}),
        )])
        .unwrap();
    for user in ["auditor", "other"] {
        let c = client_as(&server, user).await;
        let (code, list) = raw(&c, get("/api/v1/namespaces")).await;
        assert_eq!(code, 200, "{user}: {list}");
        assert!(list["items"].as_array().unwrap().len() >= 4);
        // Granted cluster-wide, so in every namespace too; other resources stay closed.
        assert_eq!(raw(&c, get("/api/v1/namespaces/default")).await.0, 200);
        assert_eq!(
            raw(&c, get("/api/v1/namespaces/default/configmaps"))
                .await
                .0,
            403
        );
    }
    // `kubectl auth can-i` answers from the same rules.
    let review = |verb: &str, resource: &str, ns: &str| {
        post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": ns}}}),
        )
    };
    let (code, r) = raw(&auditor, review("list", "namespaces", "")).await;
    assert_eq!(code, 201);
    assert_eq!(
        r["status"],
        json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"ns-readers\" of ClusterRole \"ns-reader\" to Group \"system:authenticated\""})
    );
    let (_, r) = raw(&auditor, review("list", "secrets", "default")).await;
    assert_eq!(r["status"], json!({"allowed": false}));
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_works_for_every_user_through_the_bootstrap_policy() {
    let server = Server::start(Scenario::empty().with_user("auditor")).await;
    let auditor = client_as(&server, "auditor").await;
    for path in [
        "/version",
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps",
        "/apis/apps/v1",
        "/apis/rbac.authorization.k8s.io/v1",
        "/openapi/v3",
        "/openapi/v3/api/v1",
        "/healthz",
    ] {
        let (code, body) = raw(&auditor, get(path)).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    // kube-rs' discovery, as a client would run it.
    let d = kube::Discovery::new(auditor.clone()).run().await.unwrap();
    assert!(d.has_group("rbac.authorization.k8s.io"));
    // Paths no bootstrap role grants.
    let (code, body) = raw(&auditor, get("/metrics")).await;
    assert_forbidden(
        code,
        &body,
        "forbidden: User \"auditor\" cannot get path \"/metrics\"",
        &json!({}),
    );
    // The policy is made of ordinary objects: the admin sees them and can take discovery away.
    let admin = server.client();
    let (code, crbs) = raw(
        &admin,
        get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"),
    )
    .await;
    assert_eq!(code, 200);
    let crb_names: Vec<&str> = crbs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    for n in [
        "cluster-admin",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
    ] {
        assert!(crb_names.contains(&n), "{crb_names:?}");
    }
    let req = http::Request::delete(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:discovery",
    )
    .body(Vec::new())
    .unwrap();
    assert_eq!(raw(&admin, req).await.0, 200);
    let (code, body) = raw(&auditor, get("/apis")).await;
    assert_forbidden(
        code,
        &body,
        "forbidden: User \"auditor\" cannot get path \"/apis\"",
        &json!({}),
    );
    // `/version` is still public-info.
    assert_eq!(raw(&auditor, get("/version")).await.0, 200);
    assert_eq!(raw(&admin, get("/apis")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_kinds_are_served_and_role_refs_are_immutable() {
    let server = Server::start(Scenario::empty()).await;
    let admin = server.client();
    let base = "/apis/rbac.authorization.k8s.io/v1";
    let (code, list) = raw(&admin, get(base)).await;
    assert_eq!(code, 200);
    let served: Vec<(&str, bool)> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["namespaced"].as_bool().unwrap(),
            )
        })
        .collect();
    for r in [
        ("clusterrolebindings", false),
        ("clusterroles", false),
        ("rolebindings", true),
        ("roles", true),
    ] {
        assert!(served.contains(&r), "{served:?}");
    }
    let role = rbac(
        "Role",
        None,
        "r",
        json!({"rules": [{"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "patch"]}]}),
    );
    let (code, created) = raw(
        &admin,
        post(&format!("{base}/namespaces/default/roles"), &role),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let binding = rbac(
        "RoleBinding",
        None,
        "b",
        json!({"roleRef": role_ref("Role", "r"), "subjects": [{"kind": "User", "name": "u"}]}),
    );
    let (code, created) = raw(
        &admin,
        post(&format!("{base}/namespaces/default/rolebindings"), &binding),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let (code, got) = raw(&admin, get(&format!("{base}/namespaces/default/roles/r"))).await;
    assert_eq!(code, 200);
    assert_eq!(got["rules"][0]["resources"][1], "deployments/scale");
    let (code, all) = raw(&admin, get(&format!("{base}/rolebindings"))).await;
    assert_eq!(code, 200);
    assert_eq!(all["kind"], "RoleBindingList");
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    // roleRef cannot change.
    let req = http::Request::patch(format!("{base}/namespaces/default/rolebindings/b"))
        .header("content-type", "application/merge-patch+json")
        .body(serde_json::to_vec(&json!({"roleRef": {"name": "other"}})).unwrap())
        .unwrap();
    let (code, body) = raw(&admin, req).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["message"],
        "RoleBinding.rbac.authorization.k8s.io \"b\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef"
    );
    // Unknown rule fields are strict-decoding errors, as for every built-in kind.
    let bad = rbac(
        "ClusterRole",
        None,
        "bad",
        json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verb": ["get"]}]}),
    );
    let (code, body) = raw(
        &admin,
        post(&format!("{base}/clusterroles?fieldValidation=Strict"), &bad),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"rules[0].verb\""),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_log_file_has_one_json_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let server = Server::try_start(
        auditor_scenario(),
        ServerOptions {
            request_log: Some(log.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let auditor = client_as(&server, "auditor").await;
    let admin = server.client();
    let (code, _) = raw(
        &auditor,
        get("/api/v1/namespaces/allowed/secrets?fieldSelector=type%3Distio.io%2Fkey-and-cert"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(raw(&auditor, get("/api/v1/secrets")).await.0, 403);
    let resp = admin
        .send(get("/api/v1/namespaces/other/secrets/plain").map(kube::client::Body::from))
        .await
        .unwrap();
    let admin_bytes = resp.into_body().collect().await.unwrap().to_bytes().len();
    let req = http::Request::post("/api/v1/namespaces/other/configmaps")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            )
            .unwrap(),
        )
        .unwrap();
    assert_eq!(raw(&admin, req).await.0, 201);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), server.requests().total(), "{text}");
    assert_eq!(lines.len(), 4, "{text}");
    for l in &lines {
        for field in ["verb", "method", "path", "query", "code", "bytes", "user"] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
    }
    let fields = |l: &Value| {
        (
            l["verb"].as_str().unwrap().to_string(),
            l["path"].as_str().unwrap().to_string(),
            l["code"].as_u64().unwrap(),
            l["user"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        fields(&lines[0]),
        (
            "list".into(),
            "/api/v1/namespaces/allowed/secrets".into(),
            200,
            "auditor".into()
        )
    );
    assert_eq!(
        lines[0]["query"],
        "fieldSelector=type%3Distio.io%2Fkey-and-cert"
    );
    assert_eq!(
        fields(&lines[1]),
        (
            "list".into(),
            "/api/v1/secrets".into(),
            403,
            "auditor".into()
        )
    );
    assert_eq!(
        fields(&lines[2]),
        (
            "get".into(),
            "/api/v1/namespaces/other/secrets/plain".into(),
            200,
            "kube-sim".into()
        )
    );
    assert_eq!(lines[2]["bytes"], json!(admin_bytes));
    assert_eq!(
        fields(&lines[3]),
        (
            "create".into(),
            "/api/v1/namespaces/other/configmaps".into(),
            201,
            "kube-sim".into()
        )
    );
    // Appending: a second server on the same file adds to it.
    drop(server);
    let server = Server::try_start(
        Scenario::empty(),
        ServerOptions {
            request_log: Some(log.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(raw(&server.client(), get("/api")).await.0, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 5);
    // A path that cannot be opened is a start error naming it.
    let Err(e) = Server::try_start(
        Scenario::empty(),
        ServerOptions {
            request_log: Some(dir.path().join("no/such/dir/log")),
            ..Default::default()
        },
    )
    .await
    else {
        panic!("an unwritable request log must not start")
    };
    assert!(e.to_string().contains("no/such/dir/log"), "{e}");
}

/// The real kubectl as the restricted user: `get secrets -A` is refused with kubectl's usual
/// `Error from server (Forbidden)` line, `get secrets -n allowed` works; the admin applies a
/// ClusterRole and ClusterRoleBinding with `kubectl apply -f`, which then grants the list.
#[test]
fn kubectl_as_a_restricted_user_and_apply_of_rbac_objects() {
    let Some(kubectl) = kube_sim::testenv::require_kubectl() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let server = rt
        .block_on(Server::try_start(
            auditor_scenario(),
            ServerOptions {
                request_log: Some(log.clone()),
                ..Default::default()
            },
        ))
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| -> Output {
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(server.kubeconfig_path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .output()
            .expect("kubectl runs")
    };
    let text = |o: &Output| {
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let out = run(&["--context", "auditor", "get", "secrets", "-A"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim_end(),
        "Error from server (Forbidden): secrets is forbidden: User \"auditor\" cannot list resource \"secrets\" in API group \"\" at the cluster scope"
    );
    let out = run(&["--context", "auditor", "get", "secrets", "-n", "allowed"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rows, ["istio.default", "plain"], "{stdout}");
    let out = run(&[
        "--context",
        "auditor",
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        "allowed",
    ]);
    assert_eq!(text(&out).0.trim(), "yes");
    let out = run(&[
        "--context",
        "auditor",
        "auth",
        "can-i",
        "list",
        "secrets",
        "-A",
    ]);
    assert_eq!((out.status.code(), text(&out).0.trim()), (Some(1), "no"));

    let manifest = dir.path().join("rbac.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: secret-lister\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [list]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: auditor-lists-secrets\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: secret-lister\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: auditor\n",
    )
    .unwrap();
    let apply = |m: &Path| run(&["apply", "-f", m.to_str().unwrap()]);
    let out = apply(&manifest);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        "clusterrole.rbac.authorization.k8s.io/secret-lister created\nclusterrolebinding.rbac.authorization.k8s.io/auditor-lists-secrets created"
    );
    // Again: nothing changes.
    let out = apply(&manifest);
    assert_eq!(
        text(&out).0.trim(),
        "clusterrole.rbac.authorization.k8s.io/secret-lister unchanged\nclusterrolebinding.rbac.authorization.k8s.io/auditor-lists-secrets unchanged"
    );
    let out = run(&["--context", "auditor", "get", "secrets", "-A"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("other") && stdout.contains("allowed"),
        "{stdout}"
    );
    let out = run(&[
        "get",
        "clusterroles",
        "secret-lister",
        "-o",
        "jsonpath={.rules[0].verbs}",
    ]);
    assert_eq!(text(&out).0, "[\"list\"]");
    let out = run(&[
        "get",
        "clusterrolebinding",
        "auditor-lists-secrets",
        "-o",
        "wide",
    ]);
    let (stdout, stderr) = text(&out);
    let header: Vec<&str> = stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
        "{stdout}{stderr}"
    );
    let row: Vec<&str> = stdout
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[0], row[1], row[3]),
        (
            "auditor-lists-secrets",
            "ClusterRole/secret-lister",
            "auditor"
        ),
        "{stdout}"
    );

    // Every kubectl request is one JSON line, discovery included.
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), server.requests().total());
    assert!(
        lines
            .iter()
            .any(|l| l["code"] == 403 && l["user"] == "auditor" && l["path"] == "/api/v1/secrets")
    );
}
