//! Test levers and protocol details: 401, 403, faults, latency, request log, discovery.

use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube_sim::{Fault, FaultKind, Scenario, Server};
use serde_json::{Value, json};

use crate::raw;

fn get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(Vec::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_token_is_401_status() {
    let server = Server::start(Scenario::empty()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    assert!(
        text.contains("current-context: kube-sim") && text.contains("certificate-authority-data:")
    );
    let wrong = dir.path().join("kubeconfig");
    std::fs::write(&wrong, text.replace(server.token(), "not-the-token")).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&wrong).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let (code, _, body) = raw(&client, get("/api/v1/namespaces")).await;
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 401);
    assert_eq!(
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn denial_is_rbac_shaped_403() {
    let server =
        Server::start(Scenario::empty().with_denial("list", "secrets", Some("default"))).await;
    let client = server.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let err = secrets.list(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("not an API error: {err:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        s.message,
        "secrets is forbidden: User \"kube-sim\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    // Other namespaces and verbs are untouched; run-time denials add to it.
    let other: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    other.list(&ListParams::default()).await.unwrap();
    server.deny("create", "serviceaccounts/token", None);
    let req = http::Request::post("/api/v1/namespaces/default/serviceaccounts/default/token")
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["istio-ca"]}})).unwrap())
        .unwrap();
    let (code, _, body) = raw(&client, req).await;
    assert_eq!(code, 403);
    let s: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        s["message"],
        "serviceaccounts \"default\" is forbidden: User \"kube-sim\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\""
    );
    server.allow_all();
    let req = http::Request::post("/api/v1/namespaces/default/serviceaccounts/default/token")
        .header("Content-Type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"spec": {"audiences": ["istio-ca"], "expirationSeconds": 7200}}),
            )
            .unwrap(),
        )
        .unwrap();
    let (code, _, body) = raw(&client, req).await;
    assert_eq!(code, 201);
    let tr: Value = serde_json::from_slice(&body).unwrap();
    assert!(tr["status"]["token"].as_str().unwrap().split('.').count() == 3);
    assert_eq!(tr["spec"]["expirationSeconds"], 7200);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_by_path_and_seeded_rate() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let path = "/api/v1/namespaces/default/configmaps";

    server.add_fault(Fault::on(FaultKind::InternalError, "list", path).times(1));
    let kube::Error::Api(s) = cms.list(&ListParams::default()).await.unwrap_err() else {
        panic!("expected a 500 Status")
    };
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    cms.list(&ListParams::default())
        .await
        .expect("fault fired only once");

    // kube-rs retries 429 by default: one throttled attempt, then success.
    server.reset_requests();
    server.add_fault(
        Fault::on(
            FaultKind::TooManyRequests {
                retry_after_seconds: 1,
            },
            "GET",
            path,
        )
        .times(1),
    );
    cms.list(&ListParams::default())
        .await
        .expect("kube-rs retried the 429");
    let statuses: Vec<u16> = server.requests().records.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    let mut no_retry = server.client_config();
    no_retry.default_retry = false;
    let plain = kube::Client::try_from(no_retry).unwrap();
    server.add_fault(
        Fault::on(
            FaultKind::TooManyRequests {
                retry_after_seconds: 3,
            },
            "GET",
            path,
        )
        .times(1),
    );
    let (code, headers, body) = raw(&plain, get(path)).await;
    assert_eq!(code, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "3");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["reason"],
        "TooManyRequests"
    );

    server.add_fault(Fault::on(FaultKind::ConnectionReset, "create", path).times(1));
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let err = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "a reset is a transport error, got {err:?}"
    );
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("retry after the reset succeeds");

    // The same seed gives the same failures.
    let pattern = |seed: u64| {
        let server = &server;
        let cms = cms.clone();
        async move {
            server.clear_faults();
            server.set_seed(seed);
            server.add_fault(Fault::rate(FaultKind::InternalError, 0.5));
            let mut out = Vec::new();
            for _ in 0..16 {
                out.push(cms.get("x").await.is_ok());
            }
            server.clear_faults();
            out
        }
    };
    let a = pattern(42).await;
    let b = pattern(42).await;
    assert_eq!(a, b);
    assert!(
        a.contains(&true) && a.contains(&false),
        "rate 0.5 over 16 requests: {a:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_and_request_log() {
    let server = Server::start(Scenario::empty().with_latency(Duration::from_millis(150))).await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let t = Instant::now();
    cms.get_opt("a").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "latency not applied: {:?}",
        t.elapsed()
    );
    server.set_latency(Duration::ZERO);
    server.reset_requests();
    cms.get_opt("a").await.unwrap();
    cms.get_opt("a").await.unwrap();
    cms.list(&ListParams::default()).await.unwrap();
    let log = server.requests();
    assert_eq!(
        log.count("get", "/api/v1/namespaces/default/configmaps/a"),
        2
    );
    assert_eq!(log.count("GET", "/api/v1/namespaces/default/configmaps"), 1);
    assert_eq!(
        log.count("list", "/api/v1/namespaces/default/configmaps"),
        1
    );
    assert_eq!(log.total(), 3);
    assert_eq!(log.records[0].status, 404);
    server.reset_requests();
    assert_eq!(server.requests().total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_openapi_documents() {
    let server = Server::start(Scenario::empty().with_kube_version("1.29")).await;
    let client = server.client();
    let (_, _, v) = raw(&client, get("/version")).await;
    let v: Value = serde_json::from_slice(&v).unwrap();
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("29"))
    );

    // kubectl's Accept: v2 first, then v2beta1; a 1.29 server serves only v2beta1.
    let req = http::Request::get("/apis")
        .header(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let (code, headers, body) = raw(&client, req).await;
    assert_eq!(code, 200);
    assert_eq!(
        headers["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    );
    let agg: Value = serde_json::from_slice(&body).unwrap();
    let istio = agg["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "networking.istio.io")
        .unwrap();
    assert_eq!(
        istio["versions"][0]["version"], "v1",
        "preferred version first"
    );
    let dr = istio["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "destinationrules")
        .unwrap();
    assert_eq!(dr["shortNames"], json!(["dr"]));
    assert_eq!(dr["scope"], "Namespaced");

    // kube-rs' own discovery (legacy documents) sees the CRDs.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("networking.istio.io"));

    let (_, _, root) = raw(&client, get("/openapi/v3")).await;
    let root: Value = serde_json::from_slice(&root).unwrap();
    let url = root["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, doc) = raw(&client, get(&url)).await;
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "Secret"})
    );

    // Watch: existing objects as ADDED, then changes, one JSON event per line.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "w", "labels": {"test": "w"}}}))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let resp = client
        .send(get("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&timeoutSeconds=5&labelSelector=test%3Dw").map(kube::client::Body::from))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut events: Vec<Value> = Vec::new();
    let mut deleted = false;
    while events.len() < 2 {
        let frame = body.frame().await.expect("watch stream open").unwrap();
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
        if events.len() == 1 && !deleted {
            cms.delete("w", &kube::api::DeleteParams::default())
                .await
                .unwrap();
            deleted = true;
        }
    }
    assert_eq!(
        (
            events[0]["type"].as_str(),
            events[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("w"))
    );
    assert_eq!(events[1]["type"], "DELETED");
}

const EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

async fn five_configmaps(server: &Server) -> Api<ConfigMap> {
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for i in 0..5 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms
}

#[tokio::test(flavor = "multi_thread")]
async fn continue_tokens_expire_after_pages() {
    let server = Server::start(
        Scenario::empty().with_continue_expiry(kube_sim::ContinueExpiry::AfterPages(1)),
    )
    .await;
    let cms = five_configmaps(&server).await;
    // c0 c1 | c2 c3 | c4 (plus kube-root-ca.crt, which sorts first): page 2 is served, page 3 is not.
    let p1 = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let t1 = p1.metadata.continue_.clone().unwrap();
    let p2 = cms
        .list(&ListParams::default().limit(2).continue_token(&t1))
        .await
        .unwrap();
    let t2 = p2.metadata.continue_.clone().unwrap();
    let (code, _, body) = raw(
        &server.client(),
        get(&format!(
            "/api/v1/namespaces/default/configmaps?limit=2&continue={t2}"
        )),
    )
    .await;
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")));
    assert_eq!(status["message"], EXPIRED);
    // The Status offers a token to go on at the latest revision: it is honoured.
    let fresh = status["metadata"]["continue"].as_str().unwrap().to_string();
    let rest = cms
        .list(&ListParams::default().limit(10).continue_token(&fresh))
        .await
        .unwrap();
    let seen: Vec<String> = p1
        .items
        .iter()
        .chain(&p2.items)
        .chain(&rest.items)
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        seen,
        ["c0", "c1", "c2", "c3", "c4", "kube-root-ca.crt"],
        "the whole list, once"
    );
    // kube-rs surfaces the 410 as an API error.
    let kube::Error::Api(s) = cms
        .list(&ListParams::default().limit(2).continue_token(&t2))
        .await
        .unwrap_err()
    else {
        panic!("expected a Status")
    };
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    // Off again at run time.
    server.expire_continue_tokens(kube_sim::ContinueExpiry::Never);
    cms.list(&ListParams::default().limit(2).continue_token(&t2))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn continue_tokens_expire_after_a_while() {
    let server = Server::start(Scenario::empty()).await;
    let cms = five_configmaps(&server).await;
    server.expire_continue_tokens(kube_sim::ContinueExpiry::After(Duration::from_millis(300)));
    let p1 = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let t1 = p1.metadata.continue_.clone().unwrap();
    cms.list(&ListParams::default().limit(2).continue_token(&t1))
        .await
        .expect("young token");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let kube::Error::Api(s) = cms
        .list(&ListParams::default().limit(2).continue_token(&t1))
        .await
        .unwrap_err()
    else {
        panic!("expected a Status")
    };
    assert_eq!((s.code, s.message.as_str()), (410, EXPIRED));
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_stay_terminating_while_finalizers_run() {
    for (version, cause) in [("1.32", true), ("1.16", false)] {
        let server = Server::start(
            Scenario::empty()
                .with_kube_version(version)
                .with_namespace_finalize_delay(Duration::from_millis(600)),
        )
        .await;
        let client = server.client();
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(json!({"metadata": {"name": "vm"}})).unwrap();
        nss.create(&PostParams::default(), &ns).await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "vm");
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "keep"}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();

        let t = Instant::now();
        let (code, _, body) = raw(
            &client,
            http::Request::delete("/api/v1/namespaces/vm")
                .body(Vec::new())
                .unwrap(),
        )
        .await;
        let deleted: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(code, 200);
        assert_eq!(deleted["status"]["phase"], "Terminating");
        assert!(deleted["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(deleted["spec"]["finalizers"], json!(["kubernetes"]));
        // Still there, Terminating, with its contents; a second DELETE changes nothing.
        let live = nss.get("vm").await.unwrap();
        assert_eq!(live.status.unwrap().phase.as_deref(), Some("Terminating"));
        assert!(cms.get("keep").await.is_ok());
        let (code, _, again) = raw(
            &client,
            http::Request::delete("/api/v1/namespaces/vm")
                .body(Vec::new())
                .unwrap(),
        )
        .await;
        let again: Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(code, 200);
        assert_eq!(
            again["metadata"]["deletionTimestamp"],
            deleted["metadata"]["deletionTimestamp"]
        );
        // No new content while terminating, exactly as NamespaceLifecycle says.
        let new: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "new"}})).unwrap();
        let (code, _, body) = raw(
            &client,
            http::Request::post("/api/v1/namespaces/vm/configmaps")
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&new).unwrap())
                .unwrap(),
        )
        .await;
        let s: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((code, s["reason"].as_str()), (403, Some("Forbidden")));
        assert_eq!(
            s["message"],
            "configmaps \"new\" is forbidden: unable to create new content in namespace vm because it is being terminated"
        );
        if cause {
            assert_eq!(
                s["details"]["causes"],
                json!([{"reason": "NamespaceTerminating", "message": "namespace vm is being terminated", "field": "metadata.namespace"}])
            );
        } else {
            assert!(s["details"].get("causes").is_none(), "{version}: {s}");
        }
        // Updates still work; then the finalizer is done and everything goes.
        cms.patch(
            "keep",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"x": "1"}})),
        )
        .await
        .unwrap();
        while nss.get_opt("vm").await.unwrap().is_some() {
            assert!(t.elapsed() < Duration::from_secs(5), "namespace never went");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            t.elapsed() >= Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        assert!(server.object("v1", "ConfigMap", "vm", "keep").is_none());
    }
    // Default: deleted at once.
    let server = Server::start(Scenario::empty()).await;
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(server.client());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "now"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    nss.delete("now", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    assert!(nss.get_opt("now").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn impersonation_needs_the_impersonate_permission() {
    let server = Server::start(
        Scenario::empty()
            .with_user("alice")
            .with_impersonator("carol"),
    )
    .await;
    let as_user = |user: &str| {
        let token = server.user_token(user).unwrap();
        let kc = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
        let opts = kube::config::KubeConfigOptions {
            context: Some(user.to_string()),
            ..Default::default()
        };
        (kc, opts, token)
    };
    let (kc, opts, token) = as_user("alice");
    let text = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    assert!(text.contains(&token) && text.contains("current-context: kube-sim"));
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    let alice = kube::Client::try_from(cfg).unwrap();
    // Extra users are judged by RBAC: nothing bound, nothing allowed; bound, alice may read.
    let (code, _, _) = raw(&alice, get("/api/v1/namespaces/default/configmaps")).await;
    assert_eq!(code, 403);
    let rbac = |kind: &str, name: &str, body: Value| {
        let mut o = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                           "metadata": {"name": name}});
        o.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        o
    };
    let subjects = json!([{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                          {"kind": "Group", "name": "devs"}]);
    server
        .load([
            rbac(
                "ClusterRole",
                "cm-reader",
                json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}),
            ),
            rbac(
                "ClusterRoleBinding",
                "cm-reader",
                json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cm-reader"},
                       "subjects": subjects}),
            ),
        ])
        .unwrap();
    let (code, _, _) = raw(&alice, get("/api/v1/namespaces/default/configmaps")).await;
    assert_eq!(code, 200);
    let imp = |h: &[(&str, &str)]| {
        let mut r = http::Request::get("/api/v1/namespaces/default/configmaps");
        for (k, v) in h {
            r = r.header(*k, *v);
        }
        r.body(Vec::new()).unwrap()
    };
    for (headers, message) in [
        (
            vec![("Impersonate-User", "bob")],
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
        ),
        (
            vec![("Impersonate-User", "system:serviceaccount:vm:app")],
            "serviceaccounts \"app\" is forbidden: User \"alice\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"vm\"",
        ),
    ] {
        let (code, _, body) = raw(&alice, imp(&headers)).await;
        let s: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((code, s["reason"].as_str()), (403, Some("Forbidden")));
        assert_eq!(s["message"], message);
    }
    // Groups without a user: the filter's internal error.
    let (code, _, body) = raw(&alice, imp(&[("Impersonate-Group", "system:masters")])).await;
    assert_eq!(code, 500);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "Internal Server Error: \"/api/v1/namespaces/default/configmaps\": requested [{Group  system:masters    }] without impersonating a user\n"
    );

    // The admin may impersonate; denials then name the impersonated user.
    let admin = server.client();
    server.deny("list", "configmaps", None);
    let (code, _, body) = raw(&admin, imp(&[("Impersonate-User", "bob")])).await;
    let s: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 403);
    assert_eq!(
        s["message"],
        "configmaps is forbidden: User \"bob\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    server.allow_all();
    assert_eq!(
        raw(
            &admin,
            imp(&[("Impersonate-User", "bob"), ("Impersonate-Group", "devs")])
        )
        .await
        .0,
        200
    );
    // The impersonated user is judged by RBAC, with the impersonated groups.
    let (code, _, body) = raw(&admin, imp(&[("Impersonate-User", "eve")])).await;
    let s: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 403);
    assert_eq!(
        s["message"],
        "configmaps is forbidden: User \"eve\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(
        raw(
            &admin,
            imp(&[("Impersonate-User", "eve"), ("Impersonate-Group", "devs")])
        )
        .await
        .0,
        200
    );
    // ... unless a denial takes `impersonate` away.
    server.deny("impersonate", "groups", None);
    let (code, _, body) = raw(
        &admin,
        imp(&[("Impersonate-User", "bob"), ("Impersonate-Group", "devs")]),
    )
    .await;
    let s: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 403);
    assert_eq!(
        s["message"],
        "groups \"devs\" is forbidden: User \"kube-sim\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"
    );
    server.allow_all();

    // A granted impersonator may; grants change at run time; new users get a context too.
    let (kc, opts, _) = as_user("carol");
    let carol = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        raw(&carol, imp(&[("Impersonate-User", "bob")])).await.0,
        200
    );
    server.set_impersonation("alice", true);
    assert_eq!(
        raw(&alice, imp(&[("Impersonate-User", "bob")])).await.0,
        200
    );
    server.set_impersonation("carol", false);
    assert_eq!(
        raw(&carol, imp(&[("Impersonate-User", "bob")])).await.0,
        403
    );
    let dave = server.add_user("dave").unwrap();
    assert_eq!(server.user_token("dave").as_deref(), Some(dave.as_str()));
    let (kc, opts, _) = as_user("dave");
    let dave = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(raw(&dave, get("/api")).await.0, 200);
    assert_eq!(raw(&dave, get("/api/v1/namespaces")).await.0, 403);
    // RBAC can grant `impersonate` too, per name.
    server
        .load([
            rbac(
                "ClusterRole",
                "imp-bob",
                json!({"rules": [{"apiGroups": [""], "resources": ["users"], "resourceNames": ["bob"], "verbs": ["impersonate"]}]}),
            ),
            rbac(
                "ClusterRoleBinding",
                "imp-bob",
                json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "imp-bob"},
                       "subjects": [{"kind": "User", "name": "dave"}]}),
            ),
        ])
        .unwrap();
    assert_eq!(raw(&dave, imp(&[("Impersonate-User", "bob")])).await.0, 200);
    let (code, _, body) = raw(&dave, imp(&[("Impersonate-User", "eve")])).await;
    let s: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 403);
    assert_eq!(
        s["message"],
        "users \"eve\" is forbidden: User \"dave\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    assert!(server.add_user("kube-sim").is_err());
}

/// Pages count what is left without reading it (`remainingItemCount` on unfiltered lists, none
/// on filtered ones, as the apiserver), and a token taken from a list over every namespace,
/// used for one namespace whose objects all sort before it, ends that list empty rather than
/// failing.
#[tokio::test(flavor = "multi_thread")]
async fn pages_count_what_is_left_and_a_foreign_token_ends_the_list() {
    let server = Server::start(Scenario::empty()).await;
    let cms = five_configmaps(&server).await;
    let zzz: Api<ConfigMap> = Api::namespaced(server.client(), "zzz");
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "zzz"}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(server.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "z"}})).unwrap();
    zzz.create(&PostParams::default(), &cm).await.unwrap();
    // c0 c1 | c2 c3 | c4, then `d` created between pages, | kube-root-ca.crt: the count
    // carried by the token, and counted again once writes have made it wrong.
    let page = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.metadata.remaining_item_count, Some(4));
    let token = page.metadata.continue_.unwrap();
    let page = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(page.metadata.remaining_item_count, Some(2));
    let d: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "d"}})).unwrap();
    cms.create(&PostParams::default(), &d).await.unwrap();
    let token = page.metadata.continue_.unwrap();
    let page = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = page
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, ["c4", "d"]);
    assert_eq!(page.metadata.remaining_item_count, Some(1));
    let token = page.metadata.continue_.unwrap();
    let last = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(last.items.len(), 1);
    assert!(last.metadata.continue_.is_none());
    let filtered = cms
        .list(&ListParams::default().limit(2).fields("metadata.name!=c0"))
        .await
        .unwrap();
    assert_eq!(filtered.items.len(), 2);
    assert!(filtered.metadata.continue_.is_some());
    assert_eq!(filtered.metadata.remaining_item_count, None);
    // Across namespaces, the page ending in zzz: its token, used for `default`, starts past it.
    let all: Api<ConfigMap> = Api::all(server.client());
    let everything = all.list(&ListParams::default()).await.unwrap();
    let at = everything
        .items
        .iter()
        .position(|c| c.metadata.namespace.as_deref() == Some("zzz"))
        .unwrap();
    let limit = u32::try_from(at + 1).unwrap();
    let first = all.list(&ListParams::default().limit(limit)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    assert_eq!(
        first.items.last().unwrap().metadata.namespace.as_deref(),
        Some("zzz")
    );
    let rest = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert!(rest.items.is_empty(), "{:?}", rest.items);
}
