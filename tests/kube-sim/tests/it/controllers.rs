//! Emulated controllers as they behave: Citadel (Istio 1.4) loads its CA at start and issues
//! `istio.<sa>` asynchronously; Deployments roll out; istiod's root-cert ConfigMaps per release.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_sim::{Scenario, Server};
use serde_json::{Value, json};
use x509_parser::prelude::*;

const SAMPLES: &str = "../../../shared/conformance/certs/samples";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn sample(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(SAMPLES)
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn cacerts() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": "cacerts", "namespace": "istio-system"},
           "data": {"ca-cert.pem": b64(&sample("ca-cert.pem")), "ca-key.pem": b64(&sample("ca-key.pem")),
                    "root-cert.pem": b64(&sample("root-cert.pem")), "cert-chain.pem": b64(&sample("cert-chain.pem"))}})
}

fn pems(data: &[u8]) -> Vec<Vec<u8>> {
    Pem::iter_from_buffer(data)
        .map(|p| p.unwrap().contents)
        .collect()
}

fn data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

async fn create<K>(api: &Api<K>, obj: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj).unwrap(),
    )
    .await
    .unwrap()
}

/// Polls `f` every 20 ms until it yields `Some`, for at most `limit`.
async fn until<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(ms(20)).await;
    }
}

async fn secret_root(api: &Api<Secret>, name: &str) -> Option<Vec<u8>> {
    let s = api.get_opt(name).await.unwrap()?;
    data(&s).get("root-cert.pem").cloned()
}

/// `kubectl rollout restart`: stamp the pod template.
async fn rollout_restart(api: &Api<Deployment>, name: &str) {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
}

/// `kubectl rollout status`'s test (kubectl pkg/polymorphichelpers/rollout_status.go).
fn rolled_out(d: &Deployment) -> bool {
    let s = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.metadata.generation.unwrap_or(0) <= s.observed_generation.unwrap_or(0)
        && s.updated_replicas.unwrap_or(0) >= want
        && s.replicas.unwrap_or(0) <= s.updated_replicas.unwrap_or(0)
        && s.available_replicas.unwrap_or(0) >= s.updated_replicas.unwrap_or(0)
}

fn leaf_and_chain(chain_pem: &[u8]) -> Vec<Vec<u8>> {
    let chain = pems(chain_pem);
    assert!(!chain.is_empty(), "cert-chain.pem holds certificates");
    chain
}

/// The Citadel of the runbook's legacy cluster, with short delays so the test is quick.
fn legacy(issue: u64, rollout: u64, resync: u64) -> Scenario {
    Scenario::from_files(&[scenarios().join("legacy-1.4.yaml")])
        .unwrap()
        .with_citadel_issue_delay(ms(issue))
        .with_rollout_delay(ms(rollout))
        .with_citadel_resync(ms(resync))
}

/// `kubectl meshvm prepare` as a user does it by hand: plug in `cacerts`, create the VM's
/// namespace and ServiceAccount. Citadel keeps signing with the CA it started with until its
/// Deployment is restarted; after the rollout and a resync every secret moves to the new root.
#[tokio::test(flavor = "multi_thread")]
async fn citadel_keeps_its_ca_until_restarted() {
    let server = Server::start(legacy(150, 250, 300)).await;
    let client = server.client();
    let system: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    let sample_ns: Api<Secret> = Api::namespaced(client.clone(), "sample");

    // Without cacerts Citadel made its self-signed CA and keeps it in istio-ca-secret.
    let ca_secret = system.get("istio-ca-secret").await.unwrap();
    assert_eq!(ca_secret.type_.as_deref(), Some("istio.io/ca-root"));
    let old_root = data(&ca_secret)["ca-cert.pem"].clone();
    assert_eq!(
        secret_root(&sample_ns, "istio.default").await.unwrap(),
        old_root,
        "the scenario's accounts have their secrets at once"
    );

    create(&system, cacerts()).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    create(&nss, json!({"metadata": {"name": "expandvm"}})).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "expandvm");
    let created = Instant::now();
    create(&sas, json!({"metadata": {"name": "expandvm"}})).await;
    let vm: Api<Secret> = Api::namespaced(client.clone(), "expandvm");
    assert!(
        vm.get_opt("istio.expandvm").await.unwrap().is_none(),
        "Citadel's informer has not delivered the add yet"
    );
    let issued = until(ms(3000), "istio.expandvm issued", || async {
        vm.get_opt("istio.expandvm").await.unwrap()
    })
    .await;
    let waited = created.elapsed();
    assert!(
        waited >= ms(150),
        "issued after {waited:?}, before the delay"
    );
    assert_eq!(issued.type_.as_deref(), Some("istio.io/key-and-cert"));
    assert_eq!(
        issued.metadata.annotations.as_ref().unwrap()["istio.io/service-account.name"],
        "expandvm"
    );
    let files = data(&issued);
    assert_eq!(
        files["root-cert.pem"], old_root,
        "the new cacerts is not loaded yet"
    );
    let chain = leaf_and_chain(&files["cert-chain.pem"]);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let old = pems(&old_root).remove(0);
    let (_, old) = X509Certificate::from_der(&old).unwrap();
    leaf.verify_signature(Some(old.public_key())).unwrap();

    // Resyncs come and go: nothing moves before the restart.
    tokio::time::sleep(ms(800)).await;
    assert_eq!(secret_root(&vm, "istio.expandvm").await.unwrap(), old_root);
    assert_eq!(
        secret_root(&sample_ns, "istio.default").await.unwrap(),
        old_root
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    let restarted = Instant::now();
    rollout_restart(&deployments, "istio-citadel").await;
    let d = deployments.get("istio-citadel").await.unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    assert!(
        !rolled_out(&d),
        "the rollout has just begun: {:?}",
        d.status
    );
    until(ms(3000), "rollout done", || async {
        let d = deployments.get("istio-citadel").await.unwrap();
        rolled_out(&d).then_some(())
    })
    .await;
    assert!(
        restarted.elapsed() >= ms(250),
        "rollout took {:?}",
        restarted.elapsed()
    );

    let root = sample("root-cert.pem");
    until(
        ms(3000),
        "istio.expandvm rotated to the plugged-in root",
        || async { (secret_root(&vm, "istio.expandvm").await.unwrap() == root).then_some(()) },
    )
    .await;
    until(ms(3000), "sample/istio.default rotated", || async {
        (secret_root(&sample_ns, "istio.default").await.unwrap() == root).then_some(())
    })
    .await;
    let files = data(&vm.get("istio.expandvm").await.unwrap());
    // leaf ← ca-cert (the plugged-in signing CA) ← root-cert; the chain carries cert-chain.pem.
    let chain = leaf_and_chain(&files["cert-chain.pem"]);
    assert_eq!(chain[1], pems(&sample("cert-chain.pem"))[0]);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let ca_der = pems(&sample("ca-cert.pem")).remove(0);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    assert!(leaf.validity().is_valid());
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
    // RSA 2048 in PKCS#1, as Citadel writes key.pem.
    match leaf.public_key().parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 2048),
        other => panic!("not RSA: {other:?}"),
    }
    assert!(
        String::from_utf8_lossy(&files["key.pem"]).starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    // Citadel republished its CA in istio-security.
    let cms: Api<ConfigMap> = Api::namespaced(client, "istio-system");
    let published = cms.get("istio-security").await.unwrap().data.unwrap()["caTLSRootCert"].clone();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(published)
            .unwrap(),
        sample("cert-chain.pem")
    );
}

fn citadel_only(extra: &str) -> Scenario {
    Scenario::from_yaml(&format!(
        "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nkubeVersion: \"1.16\"\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: istio-citadel, namespace: istio-system}}\n\
         spec:\n  selector: {{matchLabels: {{istio: citadel}}}}\n  template:\n    metadata: {{labels: {{istio: citadel}}}}\n\
         \x20   spec: {{containers: [{{name: citadel, image: docker.io/istio/citadel:1.4.2, args: [--self-signed-ca=true]}}]}}\n{extra}"
    ))
    .unwrap()
}

/// Namespace labels decide (1.4's `namespaceIsManaged`), secrets follow their accounts, an
/// existing secret is never overwritten, and rotation happens only on the resync.
#[tokio::test(flavor = "multi_thread")]
async fn citadel_namespaces_and_secret_lifecycle() {
    let scenario = citadel_only(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: optout, labels: {ca.istio.io/override: \"false\"}}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: elsewhere, labels: {ca.istio.io/env: other-ca}}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: mine, labels: {ca.istio.io/env: istio-system}}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: forced, labels: {ca.istio.io/override: \"true\", ca.istio.io/env: other-ca}}\n",
    )
    .with_citadel_issue_delay(ms(50))
    .with_citadel_resync(ms(200));
    assert_eq!(scenario.kube_version(), "1.16");
    let server = Server::start(scenario).await;
    let client = server.client();
    let secrets = |ns: &str| Api::<Secret>::namespaced(client.clone(), ns);
    let accounts = |ns: &str| Api::<ServiceAccount>::namespaced(client.clone(), ns);
    for ns in ["optout", "elsewhere", "mine", "forced"] {
        create(&accounts(ns), json!({"metadata": {"name": "app"}})).await;
    }
    for ns in ["mine", "forced"] {
        until(ms(2000), "managed namespaces get secrets", || async {
            secrets(ns).get_opt("istio.app").await.unwrap()
        })
        .await;
    }
    tokio::time::sleep(ms(300)).await;
    for ns in ["optout", "elsewhere"] {
        for sa in ["app", "default"] {
            assert!(
                secrets(ns)
                    .get_opt(&format!("istio.{sa}"))
                    .await
                    .unwrap()
                    .is_none(),
                "{ns}/{sa}: not managed"
            );
        }
    }

    // Opting in later issues for every account there (`enableNamespaceRetroactive`).
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.patch(
        "optout",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"ca.istio.io/override": "true"}}})),
    )
    .await
    .unwrap();
    for sa in ["app", "default"] {
        until(ms(2000), "retroactive issuance", || async {
            secrets("optout")
                .get_opt(&format!("istio.{sa}"))
                .await
                .unwrap()
        })
        .await;
    }

    // A deleted secret comes back (another key); an account's deletion takes its secret.
    let mine = secrets("mine");
    let first = data(&mine.get("istio.app").await.unwrap());
    mine.delete("istio.app", &DeleteParams::default())
        .await
        .unwrap();
    let again = until(ms(2000), "re-created", || async {
        mine.get_opt("istio.app").await.unwrap()
    })
    .await;
    assert_ne!(data(&again)["key.pem"], first["key.pem"], "a fresh key");
    assert_eq!(data(&again)["root-cert.pem"], first["root-cert.pem"]);
    accounts("mine")
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    until(ms(2000), "deleted with its account", || async {
        mine.get_opt("istio.app")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    // An existing istio.<sa> is never overwritten.
    let kept = create(
        &mine,
        json!({"metadata": {"name": "istio.keep"}, "type": "Opaque", "stringData": {"note": "mine"}}),
    )
    .await;
    create(&accounts("mine"), json!({"metadata": {"name": "keep"}})).await;
    tokio::time::sleep(ms(400)).await;
    let still = mine.get("istio.keep").await.unwrap();
    assert_eq!(still.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        still.metadata.resource_version,
        kept.metadata.resource_version
    );

    // A secret whose root is not the CA's is refreshed on the resync (scrtUpdated)...
    let root = data(&mine.get("istio.default").await.unwrap())["root-cert.pem"].clone();
    let mut stale = mine.get("istio.default").await.unwrap();
    let stale_root = sample("root-cert.pem");
    stale.data.as_mut().unwrap().insert(
        "root-cert.pem".into(),
        k8s_openapi::ByteString(stale_root.clone()),
    );
    mine.replace("istio.default", &PostParams::default(), &stale)
        .await
        .unwrap();
    until(ms(2000), "stale root refreshed", || async {
        (secret_root(&mine, "istio.default").await.unwrap() == root).then_some(())
    })
    .await;
    // ...but in a namespace Citadel does not manage it is left as it is: Citadel means to delete
    // it there, but deletes `istio.istio.default` instead (workloadsecret.go:522).
    let elsewhere = secrets("elsewhere");
    create(
        &elsewhere,
        json!({"metadata": {"name": "istio.default", "annotations": {"istio.io/service-account.name": "default"}},
               "type": "istio.io/key-and-cert",
               "data": {"root-cert.pem": b64(&stale_root), "cert-chain.pem": "", "key.pem": ""}}),
    )
    .await;
    tokio::time::sleep(ms(600)).await;
    assert_eq!(
        secret_root(&elsewhere, "istio.default").await.unwrap(),
        stale_root
    );
}

/// Real kubectl: `rollout restart` then `rollout status` waits for the emulated rollout and passes.
#[test]
fn kubectl_rollout_status_waits_for_the_rollout() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let scenario = Scenario::from_files(&[scenarios().join("modern.yaml")])
        .unwrap()
        .with_rollout_delay(ms(1500));
    let server = rt.block_on(Server::start(scenario));
    let cache = tempfile::tempdir().unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(server.kubeconfig_path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .output()
            .expect("kubectl (the dispatcher on PATH) runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = kubectl(&[
        "rollout",
        "status",
        "deployment/istiod",
        "-n",
        "istio-system",
    ]);
    assert!(ok && out.contains("successfully rolled out"), "{out}{err}");
    let start = Instant::now();
    let (ok, out, err) = kubectl(&[
        "rollout",
        "restart",
        "deployment/istiod",
        "-n",
        "istio-system",
    ]);
    assert!(ok && out.contains("restarted"), "{out}{err}");
    let (ok, out, err) = kubectl(&[
        "rollout",
        "status",
        "deployment/istiod",
        "-n",
        "istio-system",
        "--timeout=30s",
    ]);
    let took = start.elapsed();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Waiting for deployment \"istiod\" rollout to finish")
            && out.contains("deployment \"istiod\" successfully rolled out"),
        "{out}"
    );
    assert!(took >= ms(1500), "status returned after {took:?}");
    let d: Deployment = serde_json::from_value(
        server
            .object("apps/v1", "Deployment", "istio-system", "istiod")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    assert!(rolled_out(&d));
}

fn istiod(tag: &str, kube: &str, env: &str, mesh: &str, extra: &str) -> Scenario {
    Scenario::from_yaml(&format!(
        "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nkubeVersion: \"{kube}\"\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: istiod, namespace: istio-system}}\n\
         spec:\n  selector: {{matchLabels: {{app: istiod}}}}\n  template:\n    metadata: {{labels: {{app: istiod}}}}\n\
         \x20   spec: {{containers: [{{name: discovery, image: \"docker.io/istio/pilot:{tag}\", env: [{env}]}}]}}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata: {{mesh: \"{mesh}\"}}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: selected, labels: {{mesh: \"on\"}}}}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: unselected}}\n{extra}"
    ))
    .unwrap()
    .with_rollout_delay(ms(100))
}

fn has_root_cm(server: &Server, ns: &str) -> bool {
    server
        .object("v1", "ConfigMap", ns, "istio-ca-root-cert")
        .is_some()
}

/// Which namespaces istiod writes istio-ca-root-cert to, per release: all in 1.8; not the
/// kube-* system namespaces from 1.11; kube-system again from 1.21; discoverySelectors restrict
/// it with enhanced resource scoping (default from 1.22, opt-in 1.16–1.21, absent before).
#[tokio::test(flavor = "multi_thread")]
async fn istiod_root_cert_configmaps_per_release() {
    let selectors = "discoverySelectors: [{matchLabels: {mesh: 'on'}}]";
    let scoping = "{name: ENABLE_ENHANCED_RESOURCE_SCOPING, value: 'true'}";
    let cases = [
        // (tag, kube, env, mesh, kube-system, kube-public, unselected)
        ("1.8.0", "1.19", "", "", true, true, true),
        ("1.12.0", "1.22", "", "", false, false, true),
        ("1.12.0", "1.22", scoping, selectors, false, false, true),
        ("1.21.0", "1.28", "", selectors, true, false, true),
        ("1.21.0", "1.28", scoping, selectors, false, false, false),
        ("1.22.0", "1.28", "", selectors, false, false, false),
        ("1.22.0", "1.28", "", "", true, false, true),
    ];
    for (tag, kube, env, mesh, kube_system, kube_public, unselected) in cases {
        let server = Server::start(istiod(tag, kube, env, mesh, "")).await;
        let what = format!("istiod {tag} env [{env}] mesh [{mesh}]");
        assert_eq!(
            has_root_cm(&server, "kube-system"),
            kube_system,
            "{what}: kube-system"
        );
        assert_eq!(
            has_root_cm(&server, "kube-public"),
            kube_public,
            "{what}: kube-public"
        );
        assert_eq!(
            has_root_cm(&server, "unselected"),
            unselected,
            "{what}: unselected"
        );
        assert!(has_root_cm(&server, "selected"), "{what}: selected");
        let cm = server
            .object("v1", "ConfigMap", "selected", "istio-ca-root-cert")
            .unwrap();
        assert_eq!(cm["metadata"]["labels"]["istio.io/config"], "true");
        assert!(
            cm["data"]["root-cert.pem"]
                .as_str()
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
    }
}

/// istiod, like Citadel, loads `cacerts` when its pod starts: a new root reaches the
/// ConfigMaps only after `rollout restart` (1.22's cacerts watcher takes a new intermediate
/// under the same root, never a new root).
#[tokio::test(flavor = "multi_thread")]
async fn istiod_loads_cacerts_at_restart() {
    for tag in ["1.8.0", "1.22.0"] {
        let kube = if tag == "1.8.0" { "1.19" } else { "1.28" };
        let server = Server::start(istiod(tag, kube, "", "", "")).await;
        let client = server.client();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "selected");
        let root_of = || async {
            cms.get("istio-ca-root-cert").await.unwrap().data.unwrap()["root-cert.pem"].clone()
        };
        let before = root_of().await;
        let self_signed = server
            .object("v1", "Secret", "istio-system", "istio-ca-secret")
            .expect("istiod keeps its self-signed CA in istio-ca-secret");
        assert_eq!(self_signed["type"], "istio.io/ca-root");
        let system: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
        create(&system, cacerts()).await;
        tokio::time::sleep(ms(300)).await;
        assert_eq!(
            root_of().await,
            before,
            "{tag}: cacerts not loaded before a restart"
        );
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
        rollout_restart(&deployments, "istiod").await;
        let want = String::from_utf8(sample("root-cert.pem")).unwrap();
        until(ms(3000), "istiod restarted with cacerts", || async {
            (root_of().await == want).then_some(())
        })
        .await;
    }
}
