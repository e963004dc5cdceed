//! Emulated Citadel (Istio 1.4) and istiod (modern) controllers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube_sim::{Scenario, Server};
use serde_json::json;
use x509_parser::prelude::*;

const SAMPLES: &str = "../../../shared/conformance/certs/samples";

fn sample(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(SAMPLES)
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn legacy_with_cacerts() -> Scenario {
    use base64::Engine as _;
    let b64 = |n: &str| base64::engine::general_purpose::STANDARD.encode(sample(n));
    Scenario::empty().with_objects([
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "istio-citadel", "namespace": "istio-system"},
               "spec": {"selector": {"matchLabels": {"istio": "citadel"}},
                        "template": {"metadata": {"labels": {"istio": "citadel"}},
                                     "spec": {"containers": [{"name": "citadel", "image": "istio/citadel:1.4.10"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "cacerts", "namespace": "istio-system"},
               "data": {"ca-cert.pem": b64("ca-cert.pem"), "ca-key.pem": b64("ca-key.pem"),
                        "root-cert.pem": b64("root-cert.pem"), "cert-chain.pem": b64("cert-chain.pem")}}),
    ])
}

fn pems(data: &[u8]) -> Vec<Vec<u8>> {
    Pem::iter_from_buffer(data)
        .map(|p| p.unwrap().contents)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn citadel_issues_istio_sa_secret_signed_by_cacerts() {
    let server = Server::start(legacy_with_cacerts()).await;
    let client = server.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "expandvm"}})).unwrap(),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "expandvm");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "expandvm"}})).unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "expandvm");
    let s = secrets.get("istio.expandvm").await.unwrap();
    assert_eq!(s.type_.as_deref(), Some("istio.io/key-and-cert"));
    let data: BTreeMap<String, Vec<u8>> =
        s.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
    assert_eq!(data["root-cert.pem"], sample("root-cert.pem"));
    assert!(String::from_utf8_lossy(&data["key.pem"]).contains("PRIVATE KEY"));

    let chain = pems(&data["cert-chain.pem"]);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let uris: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, ["spiffe://cluster.local/ns/expandvm/sa/expandvm"]);

    // leaf ← ca-cert (the plugged-in signing CA) ← root-cert.
    let ca_der = pems(&sample("ca-cert.pem")).remove(0);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let root_der = pems(&sample("root-cert.pem")).remove(0);
    let (_, root) = X509Certificate::from_der(&root_der).unwrap();
    leaf.verify_signature(Some(ca.public_key()))
        .expect("leaf signed by cacerts' ca-cert.pem");
    ca.verify_signature(Some(root.public_key()))
        .expect("ca-cert.pem signed by root-cert.pem");
    assert!(leaf.validity().is_valid());

    // The default SA of every namespace gets one too; a deleted SA loses it.
    assert!(secrets.get_opt("istio.default").await.unwrap().is_some());
    sas.delete("expandvm", &DeleteParams::default())
        .await
        .unwrap();
    assert!(secrets.get_opt("istio.expandvm").await.unwrap().is_none());

    // Without cacerts Citadel falls back to its own root, and re-issues.
    let system: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    system
        .delete("cacerts", &DeleteParams::default())
        .await
        .unwrap();
    let reissued = secrets.get("istio.default").await.unwrap();
    let root = reissued.data.unwrap()["root-cert.pem"].0.clone();
    assert_ne!(root, sample("root-cert.pem"));
    assert!(String::from_utf8_lossy(&root).contains("BEGIN CERTIFICATE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn istiod_publishes_root_cert_configmap() {
    let scenario = Scenario::from_yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\nspec:\n  selector: {matchLabels: {app: istiod}}\n  template:\n    metadata: {labels: {app: istiod}}\n    spec: {containers: [{name: discovery, image: pilot}]}\n",
    )
    .unwrap();
    let server = Server::start(scenario).await;
    let client = server.client();
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let root = cm.get("istio-ca-root-cert").await.unwrap().data.unwrap()["root-cert.pem"].clone();
    assert!(root.contains("BEGIN CERTIFICATE"));
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "vm"}})).unwrap(),
    )
    .await
    .unwrap();
    let vm: Api<ConfigMap> = Api::namespaced(client.clone(), "vm");
    assert_eq!(
        vm.get("istio-ca-root-cert").await.unwrap().data.unwrap()["root-cert.pem"],
        root
    );
    // istiod's namespace controller skips the system namespaces.
    let ks: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    assert!(ks.get_opt("istio-ca-root-cert").await.unwrap().is_none());
    // No Citadel secrets in the istiod era.
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    assert!(secrets.get_opt("istio.default").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_scenarios_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let legacy = Server::start(
        Scenario::from_files(&[
            dir.join("legacy-1.4.yaml"),
            dir.join("legacy-1.4-strict-ready.yaml"),
        ])
        .unwrap(),
    )
    .await;
    let drs = legacy.object(
        "networking.istio.io/v1alpha3",
        "DestinationRule",
        "istio-system",
        "default",
    );
    assert!(drs.is_some(), "strict-ready DR loaded on top of legacy-1.4");
    assert!(
        legacy
            .object("v1", "Secret", "istio-system", "istio.default")
            .is_some()
    );
    let modern = Server::start(Scenario::from_files(&[dir.join("modern.yaml")]).unwrap()).await;
    assert!(
        modern
            .object("v1", "ConfigMap", "default", "istio-ca-root-cert")
            .is_some()
    );
    assert!(
        modern
            .object(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                "workloadentries.networking.istio.io"
            )
            .is_some()
    );
}
