//! meshvm's client asks for gzip (kube's `gzip` feature) and decodes it: a live doctor run
//! against kube-sim on Kubernetes 1.33 (which gzips response bodies over 128 KiB, as
//! kube-apiserver does from 1.16) sends `Accept-Encoding: gzip` on every request, receives the
//! Pod metadata pages compressed, and reports exactly what it reports with compression off.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use kube_sim::compression::THRESHOLD;
use kube_sim::{RequestRecord, Scenario, Server};
use serde_json::{Value, json};

/// Pods per namespace, in three injected namespaces: pages of 500 Pods' metadata are over
/// 128 KiB each.
const PODS_PER_NAMESPACE: usize = 540;

/// The modern scenario (Kubernetes 1.33, Istio 1.24) plus three injected namespaces, each with
/// a Deployment, its Service and its many Pods (one ReplicaSet: doctor reads one in full and
/// the rest as metadata).
fn scenario() -> Scenario {
    let base: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/modern.yaml");
    let mut objects = Vec::new();
    for t in 0..3 {
        let ns = format!("shop-{t}");
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"istio-injection": "enabled"}}}));
        objects.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
        objects.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}},
            "spec": {"replicas": PODS_PER_NAMESPACE, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "version": "v1"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.2.3", "ports": [{"name": "http", "containerPort": 8080}]}]}}}}));
        for i in 0..PODS_PER_NAMESPACE {
            objects.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("web-6f7c9d8b5d-{i:05}"), "namespace": ns,
                    "labels": {"app": "web", "version": "v1", "pod-template-hash": "6f7c9d8b5d",
                        "security.istio.io/tlsMode": "istio", "service.istio.io/canonical-name": "web",
                        "service.istio.io/canonical-revision": "v1"},
                    "annotations": {"sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"volumes\":[\"istio-envoy\",\"istio-data\",\"istio-podinfo\",\"istio-token\",\"istiod-ca-cert\"],\"imagePullSecrets\":null,\"revision\":\"default\"}"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6f7c9d8b5d",
                        "uid": format!("00000000-0000-4000-8000-00000000000{t}"), "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"containers": [
                    {"name": "web", "image": "registry.example/web:1.2.3", "ports": [{"name": "http", "containerPort": 8080}]},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]}]},
                "status": {"phase": "Running", "podIP": format!("10.244.{t}.{}", i % 250 + 2)}}));
        }
    }
    Scenario::from_files(&[base])
        .expect("modern scenario")
        .with_objects(objects)
}

/// `kubectl-meshvm-doctor -o json` through the library's live path: its report.
async fn doctor_report(server: &Server) -> Value {
    let kubeconfig = server.kubeconfig_path().display().to_string();
    let args = meshvm::args::DoctorArgs::try_parse_from([
        "kubectl-meshvm-doctor",
        "--kubeconfig",
        kubeconfig.as_str(),
        "-o",
        "json",
    ])
    .expect("flags parse");
    let opts = meshvm::doctor::DoctorOptions::resolve(args).expect("flags valid");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = meshvm::doctor::run(&opts, &mut out, &mut err, false).await;
    let err = String::from_utf8(err).unwrap();
    outcome.unwrap_or_else(|e| panic!("doctor: {e}\n{err}"));
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("doctor -o json: {e}\n{err}"))
}

fn pod_metadata_pages(records: &[RequestRecord]) -> Vec<&RequestRecord> {
    records
        .iter()
        .filter(|r| r.path == "/api/v1/pods" && r.accept.contains("as=PartialObjectMetadataList"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reads_gzipped_lists_and_reports_the_same() {
    let server = Server::start(scenario()).await;
    assert_eq!(server.kube_version().minor(), 33);

    let zipped = doctor_report(&server).await;
    let log = server.requests();
    assert!(!log.records.is_empty());
    for r in &log.records {
        assert_eq!(
            r.accept_encoding, "gzip",
            "doctor asks for gzip on every request: {} {}",
            r.method, r.path
        );
    }
    let pages = pod_metadata_pages(&log.records);
    assert_eq!(pages.len(), 4, "1 620 Pods in pages of 500: {pages:?}");
    for p in &pages {
        let (bytes, wire) = (p.bytes.unwrap(), p.wire_bytes.unwrap());
        if bytes > THRESHOLD as u64 {
            assert_eq!(p.encoding, "gzip", "{p:?}");
            assert!(wire * 5 < bytes, "{wire} of {bytes}");
        } else {
            assert_eq!((p.encoding.as_str(), wire), ("", bytes), "{p:?}");
        }
    }
    assert_eq!(
        pages.iter().filter(|p| p.encoding == "gzip").count(),
        3,
        "three full pages over 128 KiB, the last (120 Pods) under: {pages:?}"
    );
    let wire: u64 = log.records.iter().filter_map(|r| r.wire_bytes).sum();
    let decoded: u64 = log.records.iter().filter_map(|r| r.bytes).sum();
    assert!(
        wire * 2 < decoded,
        "doctor's transfer: {wire} on the wire for {decoded} decoded"
    );

    server.set_response_compression(false);
    server.reset_requests();
    let plain = doctor_report(&server).await;
    let log = server.requests();
    assert!(log.records.iter().all(|r| r.encoding.is_empty()));
    assert_eq!(pod_metadata_pages(&log.records).len(), 4);
    assert_eq!(
        zipped, plain,
        "the same report with and without compression"
    );
    assert!(
        zipped.to_string().contains("shop-0"),
        "the report covers the Pods' namespaces: {zipped}"
    );
}
