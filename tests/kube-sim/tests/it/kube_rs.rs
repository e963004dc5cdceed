//! kube-rs against the sim: typed and dynamic CRUD, server-side apply, API semantics, paging.

use std::time::Instant;

use base64::Engine as _;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube_sim::{Scenario, Server};
use serde_json::json;

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn dr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1alpha3", "DestinationRule"),
        "destinationrules",
    )
}

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "meshvm", "n": name}},
        "data": {"k": value}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_crud_and_semantics() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = cms
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let rv1: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let dup = api_err(
        cms.create(&PostParams::default(), &cm("a", "1"))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "2".to_string())].into());
    let replaced = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "resourceVersion must grow: {rv1} -> {rv2}");

    // Stale resourceVersion: the apiserver's optimistic concurrency.
    let stale = api_err(
        cms.replace("a", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale.message.contains("the object has been modified"),
        "{}",
        stale.message
    );

    let missing = api_err(cms.get("nope").await.unwrap_err());
    assert_eq!(
        (
            missing.code,
            missing.reason.as_str(),
            missing.message.as_str()
        ),
        (404, "NotFound", "configmaps \"nope\" not found")
    );

    // dryRun=All changes nothing.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    cms.create(&dry, &cm("dry", "x")).await.unwrap();
    assert!(cms.get_opt("dry").await.unwrap().is_none());

    // Server-side apply: creates, records managedFields, conflicts with another manager's field.
    let applied = cms
        .patch("b", &PatchParams::apply("meshvm"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "labels": {"app": "meshvm", "n": "b"}}, "data": {"x": "1"}})))
        .await
        .unwrap();
    let mf = applied.metadata.managed_fields.clone().unwrap();
    assert_eq!(
        (mf[0].manager.as_deref(), mf[0].operation.as_deref()),
        (Some("meshvm"), Some("Apply"))
    );
    let conflict = api_err(
        cms.patch("b", &PatchParams::apply("other"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"x": "2"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("conflict with \"meshvm\""),
        "{}",
        conflict.message
    );
    let forced = cms
        .patch("b", &PatchParams::apply("other").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"x": "2"}})))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["x"], "2");

    // Merge and JSON patches.
    let merged = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": null, "m": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.clone().unwrap(),
        [("m".to_string(), "3".to_string())].into()
    );
    // kube's Patch::Json needs a feature; send the JSON patch as kubectl does.
    let req = http::Request::patch("/api/v1/namespaces/default/configmaps/a")
        .header("Content-Type", "application/json-patch+json")
        .body(serde_json::to_vec(&json!([{"op": "add", "path": "/data/j", "value": "4"}])).unwrap())
        .unwrap();
    let jpatched: ConfigMap = client.request(req).await.unwrap();
    assert_eq!(jpatched.data.unwrap()["j"], "4");

    // Selectors.
    let by_label = cms
        .list(&ListParams::default().labels("n in (a,b)"))
        .await
        .unwrap();
    assert_eq!(by_label.items.len(), 2);
    // Only indexed fields can be selected, as on a real apiserver.
    let unsupported = api_err(
        cms.list(&ListParams::default().fields("data.k=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(unsupported.code, 400);
    assert!(
        unsupported
            .message
            .ends_with("field label not supported: data.k"),
        "{}",
        unsupported.message
    );
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_b = cms
        .list(&ListParams::default().labels("app=meshvm,n!=b"))
        .await
        .unwrap();
    assert_eq!(
        not_b
            .items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["a"]
    );

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_every_cluster_has() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let svc: Api<Service> = Api::namespaced(client.clone(), "default");
    let k8s = svc.get("kubernetes").await.unwrap();
    assert_eq!(k8s.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));

    // A new namespace gets its `default` ServiceAccount; deleting it deletes its contents.
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "vm"}})).unwrap(),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "vm");
    assert!(sas.get_opt("default").await.unwrap().is_some());
    // kube-controller-manager's share: `default` comes back, kube-root-ca.crt holds the API CA.
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    assert!(sas.get_opt("default").await.unwrap().is_some());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "vm");
    let ca = cms.get("kube-root-ca.crt").await.unwrap().data.unwrap()["ca.crt"].clone();
    let kubeconfig = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    let inline = base64::engine::general_purpose::STANDARD.encode(&ca);
    assert!(
        kubeconfig.contains(&inline),
        "kube-root-ca.crt is not the kubeconfig's CA"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "vm");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}))
            .unwrap();
    let s = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(s.data.unwrap()["a"].0, b"b");
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    nss.delete("vm", &DeleteParams::default()).await.unwrap();
    assert!(secrets.get_opt("s").await.unwrap().is_none());
    let kept = api_err(
        nss.delete("kube-system", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(kept.code, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_cidr_from_scenario() {
    let scenario = Scenario::from_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec: {cidrs: [172.20.0.0/16]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  type: LoadBalancer\n  ports: [{name: tls, port: 15443}]\nstatus:\n  loadBalancer:\n    ingress: [{hostname: gw.example.com}]\n",
    )
    .unwrap();
    let server = Server::start(scenario).await;
    let svc: Api<Service> = Api::namespaced(server.client(), "default");
    assert_eq!(
        svc.get("kubernetes")
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("172.20.0.1")
    );
    let gw: Api<Service> = Api::namespaced(server.client(), "istio-system");
    let gw = gw.get("gw").await.unwrap();
    assert!(
        gw.spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .as_deref()
            .unwrap()
            .starts_with("172.20.")
    );
    assert!(gw.spec.unwrap().ports.unwrap()[0].node_port.is_some());
    let ingress = gw.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].hostname.as_deref(), Some("gw.example.com"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_restart_patch_and_generation() {
    let scenario = Scenario::from_yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\nspec:\n  selector: {matchLabels: {app: istiod}}\n  template:\n    metadata: {labels: {app: istiod}}\n    spec: {containers: [{name: discovery, image: pilot}]}\n",
    )
    .unwrap();
    let server = Server::start(scenario).await;
    let deps: Api<Deployment> = Api::namespaced(server.client(), "istio-system");
    let before = deps.get("istiod").await.unwrap();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}});
    let after = deps
        .patch("istiod", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    assert_eq!(
        after.metadata.generation,
        before.metadata.generation.map(|g| g + 1)
    );
    let tpl = after.spec.unwrap().template;
    assert_eq!(
        tpl.metadata.unwrap().annotations.unwrap()["kubectl.kubernetes.io/restartedAt"],
        "2025-01-01T00:00:00Z"
    );
    assert_eq!(
        tpl.spec.unwrap().containers[0].image.as_deref(),
        Some("pilot")
    );
    assert_eq!(
        after.status.unwrap().observed_generation,
        after.metadata.generation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_rules_dynamic_and_paged() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let ar = dr_resource();
    let drs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let dr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
        "metadata": {"name": "one"}, "spec": {"host": "one.default.svc.cluster.local"}
    }))
    .unwrap();
    drs.create(&PostParams::default(), &dr).await.unwrap();
    let mut bad = dr.clone();
    bad.metadata.name = Some("bad".into());
    bad.data["spec"]["trafficPolicy"] = json!({"tls": {"mode": "BOGUS"}});
    let invalid = api_err(drs.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert!(invalid.message.starts_with("DestinationRule.networking.istio.io \"bad\" is invalid: spec.trafficPolicy.tls.mode: Unsupported value: \"BOGUS\""), "{}", invalid.message);
    // Custom resources need a resourceVersion on update, as the apiserver insists.
    let mut no_rv = drs.get("one").await.unwrap();
    no_rv.metadata.resource_version = None;
    let e = api_err(
        drs.replace("one", &PostParams::default(), &no_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    drs.delete("one", &DeleteParams::default()).await.unwrap();

    // 10 000 objects, listed 500 at a time as kubectl and kube-rs page.
    let objects = (0..10_000).map(|i| {
        json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
               "metadata": {"name": format!("dr-{i:05}"), "namespace": format!("ns-{}", i % 10)},
               "spec": {"host": format!("svc-{i}.ns-{}.svc.cluster.local", i % 10), "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}})
    });
    server.load(objects).unwrap();
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let started = Instant::now();
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = all.list(&lp).await.unwrap();
        names.extend(page.items.into_iter().filter_map(|o| o.metadata.name));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    let paged = started.elapsed();
    assert_eq!(names.len(), 10_000);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 10_000, "pages overlapped");
    let started = Instant::now();
    let one_shot = all.list(&ListParams::default()).await.unwrap();
    let whole = started.elapsed();
    assert_eq!(one_shot.items.len(), 10_000);
    eprintln!("10 000 DestinationRules: paged by 500 in {paged:?}, one list in {whole:?}");
    assert!(paged.as_secs_f64() < 5.0, "paged list took {paged:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn created_crd_becomes_servable_and_validates() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"size": {"type": "integer", "maximum": 10}}}}}}}]}
    }))
    .unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    assert_eq!(
        created.data["status"]["conditions"][1]["type"],
        "Established"
    );

    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("example.com"));
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w = |size: i64| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": format!("w{size}")}, "spec": {"size": size}}))
        .unwrap()
    };
    widgets.create(&PostParams::default(), &w(3)).await.unwrap();
    let too_big = api_err(
        widgets
            .create(&PostParams::default(), &w(11))
            .await
            .unwrap_err(),
    );
    assert_eq!(too_big.code, 422);
    assert!(too_big.message.contains("spec.size"), "{}", too_big.message);
    // Strategic merge patch is not for custom resources.
    let smp = api_err(
        widgets
            .patch(
                "w3",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 4}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(smp.code, 415);

    // Deleting the CRD deletes its objects and the kind stops being served.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        server
            .object("example.com/v1", "Widget", "default", "w3")
            .is_none()
    );
    let gone = widgets.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(gone, kube::Error::Api(ref s) if s.code == 404),
        "{gone:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_fields_of_builtin_kinds_follow_field_validation() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let body = |name: &str| {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"a": "1"}, "dta": {"typo": "x"}}))
        .unwrap()
    };
    let post = |q: &str, name: &str| {
        http::Request::post(format!(
            "/api/v1/namespaces/default/configmaps?fieldValidation={q}"
        ))
        .header("Content-Type", "application/json")
        .body(body(name))
        .unwrap()
    };
    let strict = client
        .request::<ConfigMap>(post("Strict", "s"))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = strict else {
        panic!("{strict:?}")
    };
    assert_eq!(
        (s.code, s.message.as_str()),
        (400, "strict decoding error: unknown field \"dta\"")
    );
    // Ignore (and Warn) store the object without the unknown field.
    let kept = client
        .request::<serde_json::Value>(post("Ignore", "i"))
        .await
        .unwrap();
    assert!(
        kept.get("dta").is_none() && kept["data"]["a"] == "1",
        "{kept}"
    );
    let wrong_type = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}, "data": {"a": 1}})).unwrap())
        .unwrap();
    let e = client.request::<ConfigMap>(wrong_type).await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 400 && s.message.starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_runs_generate_name_and_collections() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone();
    let before = server.object_count();

    // dryRun=All on update, patch, apply and delete: answers as if done, stores nothing.
    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "2".to_string())].into());
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    assert_eq!(
        cms.replace("a", &dry, &changed)
            .await
            .unwrap()
            .data
            .unwrap()["k"],
        "2"
    );
    let dry_patch = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    cms.patch("a", &dry_patch, &Patch::Merge(json!({"data": {"k": "3"}})))
        .await
        .unwrap();
    let dry_apply = PatchParams {
        dry_run: true,
        ..PatchParams::apply("meshvm")
    };
    cms.patch(
        "new",
        &dry_apply,
        &Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}}),
        ),
    )
    .await
    .unwrap();
    let dry_delete = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    cms.delete("a", &dry_delete).await.unwrap();
    let now = cms.get("a").await.unwrap();
    assert_eq!(
        (
            now.data.unwrap()["k"].as_str(),
            now.metadata.resource_version
        ),
        ("1", rv)
    );
    assert_eq!(server.object_count(), before);

    // generateName.
    let gen_cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let g = cms.create(&PostParams::default(), &gen_cm).await.unwrap();
    let name = g.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    // A failing JSON patch `test` is refused and changes nothing.
    let req = http::Request::patch("/api/v1/namespaces/default/configmaps/a")
        .header("Content-Type", "application/json-patch+json")
        .body(serde_json::to_vec(&json!([{"op": "test", "path": "/data/k", "value": "nope"}, {"op": "remove", "path": "/data/k"}])).unwrap())
        .unwrap();
    let e = client.request::<ConfigMap>(req).await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 422),
        "{e:?}"
    );
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "1");

    // deletecollection honours the label selector.
    cms.create(&PostParams::default(), &cm("b", "1"))
        .await
        .unwrap();
    let mut other = cm("c", "1");
    other.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
    cms.create(&PostParams::default(), &other).await.unwrap();
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=meshvm"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(
        left.contains(&"c".to_string())
            && !left.contains(&"a".to_string())
            && !left.contains(&"b".to_string()),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_syntax_and_immutable_fields() {
    let server = Server::start(Scenario::empty()).await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let bad_label: Secret = serde_json::from_value(json!({"metadata": {"name": "l",
        "labels": {"topology.istio.io/network": "network 1"}}}))
    .unwrap();
    let e = api_err(
        secrets
            .create(&PostParams::default(), &bad_label)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.starts_with(
            "Secret \"l\" is invalid: metadata.labels: Invalid value: \"network 1\": a valid label"
        ),
        "{}",
        e.message
    );

    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "type": "Opaque", "stringData": {"a": "b"}}),
    )
    .unwrap();
    let s = secrets.create(&PostParams::default(), &s).await.unwrap();
    let mut retyped = s.clone();
    retyped.type_ = Some("istio.io/key-and-cert".into());
    let e = api_err(
        secrets
            .replace("s", &PostParams::default(), &retyped)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            422,
            "Secret \"s\" is invalid: type: Invalid value: \"istio.io/key-and-cert\": field is immutable"
        )
    );

    let frozen: Secret = serde_json::from_value(
        json!({"metadata": {"name": "f"}, "immutable": true, "stringData": {"a": "b"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &frozen)
        .await
        .unwrap();
    let e = api_err(
        secrets
            .patch(
                "f",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"a": "Yw=="}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("field is immutable when `immutable` is set"),
        "{}",
        e.message
    );
}

/// Regression: a write that changes nothing (also through another served version) keeps the resourceVersion.
#[tokio::test(flavor = "multi_thread")]
async fn no_op_writes_keep_resource_version() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1beta1", "DestinationRule"),
        "destinationrules",
    );
    let drs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let dr = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
        "metadata": {"name": "d"}, "spec": {"host": "d.default.svc.cluster.local"}});
    let first = drs
        .patch("d", &PatchParams::apply("meshvm"), &Patch::Apply(&dr))
        .await
        .unwrap();
    let second = drs
        .patch("d", &PatchParams::apply("meshvm"), &Patch::Apply(&dr))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let c = cms
        .create(&PostParams::default(), &cm("same", "1"))
        .await
        .unwrap();
    let again = cms
        .replace("same", &PostParams::default(), &c)
        .await
        .unwrap();
    assert_eq!(c.metadata.resource_version, again.metadata.resource_version);
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_references_are_garbage_collected() {
    let server = Server::start(Scenario::empty()).await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    for (owner, dependent) in [("o1", "d1"), ("o2", "d2")] {
        let o = cms
            .create(&PostParams::default(), &cm(owner, "1"))
            .await
            .unwrap();
        let d: Secret = serde_json::from_value(json!({"metadata": {"name": dependent, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": o.metadata.uid.unwrap()}]}}))
        .unwrap();
        secrets.create(&PostParams::default(), &d).await.unwrap();
    }
    cms.delete("o1", &DeleteParams::background()).await.unwrap();
    assert!(
        secrets.get_opt("d1").await.unwrap().is_none(),
        "dependent survived its owner"
    );
    cms.delete("o2", &DeleteParams::orphan()).await.unwrap();
    assert!(
        secrets.get_opt("d2").await.unwrap().is_some(),
        "orphaned dependent was deleted"
    );
}

/// Reads watch events (one JSON document per line) until `n` have come.
async fn watch_events(
    client: &kube::Client,
    path: &str,
    accept: &str,
    n: usize,
) -> (u16, Vec<serde_json::Value>) {
    use http_body_util::BodyExt as _;
    let req = http::Request::get(path)
        .header("Accept", accept)
        .body(Vec::new())
        .unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while events.len() < n {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame.unwrap().into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    if events.is_empty() && !buf.is_empty() {
        events.push(serde_json::from_slice(&buf).unwrap());
    }
    (code, events)
}

/// kube-rs' metadata list where the version has `meta.k8s.io/v1`; metadata and Table watches
/// (what kube-rs' `watch_metadata` and `kubectl get -w` ask for) at the version's meta API.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_list_and_watch_follow_the_version() {
    let server = Server::start(Scenario::empty().with_kube_version("1.33")).await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("m", "1"))
        .await
        .unwrap();
    let list = cms.list_metadata(&ListParams::default()).await.unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    assert!(names.contains(&"m".to_string()), "{names:?}");
    let meta = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let path = "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&timeoutSeconds=1&labelSelector=n%3Dm";
    let (code, events) = watch_events(&client, path, meta, 1).await;
    assert_eq!(code, 200);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(
        events[0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
               "metadata": events[0]["object"]["metadata"].clone()})
    );
    assert_eq!(events[0]["object"]["metadata"]["name"], "m");

    // Before 1.15: the v1 metadata watch is refused as the list is; Tables are v1beta1.
    let server = Server::start(Scenario::empty().with_kube_version("1.14")).await;
    let client = server.client();
    let (code, events) = watch_events(&client, path, meta, 1).await;
    assert_eq!(
        (code, events[0]["reason"].as_str()),
        (406, Some("NotAcceptable"))
    );
    let (code, events) = watch_events(
        &client,
        "/api/v1/namespaces?watch=true&resourceVersion=0&timeoutSeconds=1",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        1,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(events[0]["object"]["apiVersion"], "meta.k8s.io/v1beta1");
}

/// ClusterIPs are the lowest free addresses of the range from offset 10, however Services come
/// and go: a bulk load, a delete (its address is free again) and creates through the API all
/// see the same allocator.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_ips_are_the_lowest_free_across_loads_creates_and_deletes() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, DeleteParams, PostParams};
    let server = kube_sim::Server::start(kube_sim::Scenario::empty()).await;
    let svc = |name: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"port": 80}]}})
    };
    server
        .load((0..50).map(|i| svc(&format!("s{i}"))))
        .expect("services load");
    let api: Api<Service> = Api::namespaced(server.client(), "default");
    let ip = |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap();
    let mut ips: Vec<String> = Vec::new();
    for i in 0..50 {
        ips.push(ip(&api.get(&format!("s{i}")).await.unwrap()));
    }
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        50,
        "every Service has its own address: {ips:?}"
    );
    // Freed by a delete: the next create takes it.
    api.delete("s7", &DeleteParams::default()).await.unwrap();
    let created: Service = serde_json::from_value(svc("n1")).unwrap();
    let n1 = api.create(&PostParams::default(), &created).await.unwrap();
    assert_eq!(
        ip(&n1),
        ips[7],
        "a deleted Service's address is reused first"
    );
    // Then past the end of what the load took.
    let created: Service = serde_json::from_value(svc("n3")).unwrap();
    let n3 = api.create(&PostParams::default(), &created).await.unwrap();
    assert!(!ips.contains(&ip(&n3)), "{} is new", ip(&n3));
}
