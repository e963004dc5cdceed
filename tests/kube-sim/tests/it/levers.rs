//! Test levers and protocol details: 401, 403, faults, latency, request log, discovery.

use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube_sim::{Fault, FaultKind, Scenario, Server};
use serde_json::{Value, json};

async fn raw(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("transport works");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

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
