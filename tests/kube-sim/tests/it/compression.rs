//! Response compression as kube-apiserver does it (`kube_sim::compression`): a body over
//! 128 KiB goes gzipped to a client whose `Accept-Encoding` names gzip, from 1.16 (level 4),
//! 1.26 (level 1); never on 1.14 (gate alpha, off), never to a client that does not ask, never
//! on a watch stream; `/openapi/v2` through its own gzip handler. The request log tells the
//! body's size (`bytes`) from what went on the wire (`wire_bytes`, `encoding`). Real kubectl
//! and kube-rs decode it and see the same objects as without compression.

use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube_sim::compression::THRESHOLD;
use kube_sim::{RequestRecord, Scenario, Server};
use serde_json::{Value, json};

/// `n` Pods spread over `namespaces` namespaces, each about 1 KiB of JSON (labels,
/// annotations, two containers with env), as a cluster's pods are.
fn pods(n: usize, namespaces: usize) -> Vec<Value> {
    let mut objects: Vec<Value> = (0..namespaces)
        .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{i}")}}))
        .collect();
    objects.extend((0..n).map(|i| {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("web-{i:05}-7d9c5b8f6-x{:04x}", i * 7919 % 65_536),
                "namespace": format!("team-{}", i % namespaces),
                "labels": {"app": "web", "pod-template-hash": "7d9c5b8f6", "version": format!("v{}", i % 3)},
                "annotations": {"sidecar.istio.io/status": format!("{{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"revision\":\"default\",\"n\":{i}}}")},
            },
            "spec": {
                "serviceAccountName": "web",
                "containers": [
                    {"name": "web", "image": "registry.example/web:1.2.3", "ports": [{"containerPort": 8080, "name": "http"}],
                     "env": [{"name": "POD_INDEX", "value": i.to_string()}, {"name": "MODE", "value": "production"}]},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.0", "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"]},
                ],
            },
        })
    }));
    objects
}

async fn sim(version: &str, n: usize) -> Server {
    let server = Server::start(Scenario::empty().with_kube_version(version)).await;
    server.load(pods(n, 3)).unwrap();
    server
}

/// A kube-rs client that neither asks for gzip nor decodes it: what it receives is what the
/// sim sent.
fn raw_client(server: &Server) -> kube::Client {
    let mut config = server.client_config();
    config.disable_compression = true;
    kube::Client::try_from(config).unwrap()
}

async fn get(
    client: &kube::Client,
    path: &str,
    accept_encoding: Option<&str>,
) -> (http::HeaderMap, Vec<u8>) {
    let mut req = http::Request::get(path);
    if let Some(ae) = accept_encoding {
        req = req.header(http::header::ACCEPT_ENCODING, ae);
    }
    let (status, headers, body) = crate::raw(client, req.body(Vec::new()).unwrap()).await;
    assert_eq!(status, 200, "GET {path}");
    (headers, body)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a valid gzip stream");
    out
}

fn header<'a>(h: &'a http::HeaderMap, name: &http::header::HeaderName) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

fn last(server: &Server) -> RequestRecord {
    server
        .requests()
        .records
        .last()
        .cloned()
        .expect("a request was logged")
}

/// Per version of the matrix: a list over 128 KiB goes gzipped (at the release's level) to a
/// client asking for gzip, as is to one that does not; a list under the threshold never.
#[tokio::test(flavor = "multi_thread")]
async fn big_lists_are_gzipped_to_clients_that_ask_per_version() {
    // (version, gzip level or None when the gate is off by default). The gzip header's XFL
    // byte says the level class: 4 for the fastest (level 1), 0 for levels 2–8.
    for (version, level) in [
        ("1.14", None),
        ("1.16", Some(4)),
        ("1.19", Some(4)),
        ("1.22", Some(4)),
        ("1.23", Some(4)),
        ("1.28", Some(1)),
        ("1.33", Some(1)),
    ] {
        let server = sim(version, 600).await;
        let client = raw_client(&server);
        let (plain_headers, plain) = get(&client, "/api/v1/pods", None).await;
        assert!(
            plain.len() > THRESHOLD,
            "{version}: the list is {} bytes",
            plain.len()
        );
        let list: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 600, "{version}");
        assert!(plain_headers.get(http::header::CONTENT_ENCODING).is_none());
        let r = last(&server);
        assert_eq!(
            (
                r.bytes,
                r.wire_bytes,
                r.encoding.as_str(),
                r.accept_encoding.as_str()
            ),
            (Some(plain.len() as u64), Some(plain.len() as u64), "", ""),
            "{version}: a client that does not ask"
        );

        let (headers, body) = get(&client, "/api/v1/pods", Some("gzip")).await;
        let r = last(&server);
        assert_eq!(r.accept_encoding, "gzip");
        assert_eq!(
            r.bytes,
            Some(plain.len() as u64),
            "{version}: bytes before compression"
        );
        match level {
            None => {
                assert!(
                    headers.get(http::header::CONTENT_ENCODING).is_none(),
                    "{version}"
                );
                assert_eq!(body, plain, "{version}: as is");
                assert_eq!(
                    (r.wire_bytes, r.encoding.as_str()),
                    (Some(plain.len() as u64), "")
                );
            }
            Some(level) => {
                assert_eq!(
                    header(&headers, &http::header::CONTENT_ENCODING),
                    ["gzip"],
                    "{version}"
                );
                assert!(
                    header(&headers, &http::header::VARY).contains(&"Accept-Encoding"),
                    "{version}: {headers:?}"
                );
                assert_eq!(
                    body[8],
                    if level == 1 { 4 } else { 0 },
                    "{version}: XFL of level {level}"
                );
                assert_eq!(
                    gunzip(&body),
                    plain,
                    "{version}: the same bytes once decoded"
                );
                assert!(
                    body.len() * 5 < plain.len(),
                    "{version}: {} of {}",
                    body.len(),
                    plain.len()
                );
                assert_eq!(
                    (r.wire_bytes, r.encoding.as_str()),
                    (Some(body.len() as u64), "gzip"),
                    "{version}"
                );
            }
        }

        // A namespace's list under the threshold goes as is, asked or not.
        let (headers, small) = get(
            &client,
            "/api/v1/namespaces/team-0/pods?limit=20",
            Some("gzip"),
        )
        .await;
        assert!(small.len() < THRESHOLD);
        assert!(
            headers.get(http::header::CONTENT_ENCODING).is_none(),
            "{version}"
        );
        serde_json::from_slice::<Value>(&small).expect("plain JSON");
        let r = last(&server);
        assert_eq!(
            (r.wire_bytes, r.encoding.as_str()),
            (r.bytes, ""),
            "{version}"
        );
    }
}

/// The apiserver matches the exact token `gzip` (no q-values), the gate lever turns it off,
/// and watch streams are never compressed.
#[tokio::test(flavor = "multi_thread")]
async fn accept_encoding_tokens_gate_lever_and_watch() {
    let server = sim("1.33", 600).await;
    let client = raw_client(&server);
    for (ae, gzipped) in [
        ("deflate, gzip, br, zstd", true), // curl --compressed
        (" br ,gzip ", true),
        ("gzip;q=1.0", false),
        ("GZIP", false),
        ("identity", false),
    ] {
        let (headers, _) = get(&client, "/api/v1/pods", Some(ae)).await;
        assert_eq!(
            headers.get(http::header::CONTENT_ENCODING).is_some(),
            gzipped,
            "Accept-Encoding: {ae:?}"
        );
    }

    server.set_response_compression(false);
    let (headers, body) = get(&client, "/api/v1/pods", Some("gzip")).await;
    assert!(headers.get(http::header::CONTENT_ENCODING).is_none());
    serde_json::from_slice::<Value>(&body).expect("plain JSON with the gate off");
    assert_eq!(last(&server).encoding, "");
    server.set_response_compression(true);

    // A watch sends the 600 existing Pods as ADDED events (well over 128 KiB), unzipped.
    let (headers, body) = get(
        &client,
        "/api/v1/pods?watch=true&timeoutSeconds=1",
        Some("gzip"),
    )
    .await;
    assert!(
        headers.get(http::header::CONTENT_ENCODING).is_none(),
        "{headers:?}"
    );
    assert!(body.len() > THRESHOLD, "{} bytes of events", body.len());
    let events = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(events, 600);
    let r = last(&server);
    assert_eq!(
        (r.verb.as_str(), r.bytes, r.wire_bytes, r.encoding.as_str()),
        ("watch", None, None, "")
    );
}

/// `/openapi/v2` is gzipped by kube-openapi's own handler from 1400 bytes (gziphandler v1.1.1),
/// whatever the gate; `/openapi/v3` and `/version` never.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_v2_has_its_own_gzip_handler() {
    let server = Server::start(Scenario::empty().with_kube_version("1.28")).await;
    server.set_response_compression(false);
    let client = raw_client(&server);
    let (plain_headers, plain) = get(&client, "/openapi/v2", None).await;
    assert!(plain.len() >= 1400, "{} bytes", plain.len());
    assert!(header(&plain_headers, &http::header::VARY).contains(&"Accept-Encoding"));
    let (headers, body) = get(&client, "/openapi/v2", Some("gzip;q=0.8")).await;
    assert_eq!(header(&headers, &http::header::CONTENT_ENCODING), ["gzip"]);
    assert_eq!(gunzip(&body), plain);
    let r = last(&server);
    assert_eq!(
        (r.bytes, r.wire_bytes, r.encoding.as_str()),
        (Some(plain.len() as u64), Some(body.len() as u64), "gzip")
    );
    let (headers, _) = get(&client, "/openapi/v2", Some("gzip;q=0")).await;
    assert!(headers.get(http::header::CONTENT_ENCODING).is_none());
    for path in ["/openapi/v3", "/openapi/v3/api/v1", "/version"] {
        let (headers, _) = get(&client, path, Some("gzip")).await;
        assert!(
            headers.get(http::header::CONTENT_ENCODING).is_none(),
            "{path}"
        );
    }
}

/// `--request-log` lines carry `bytes`, `wire_bytes` and `encoding`.
#[tokio::test(flavor = "multi_thread")]
async fn request_log_file_has_wire_bytes_and_encoding() {
    let server = sim("1.33", 600).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.jsonl");
    server.set_request_log(Some(&file)).unwrap();
    let client = raw_client(&server);
    let (_, zipped) = get(&client, "/api/v1/pods", Some("gzip")).await;
    let (_, plain) = get(&client, "/api/v1/pods", None).await;
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (
            &lines[0]["bytes"],
            &lines[0]["wire_bytes"],
            &lines[0]["encoding"],
            &lines[0]["accept_encoding"]
        ),
        (
            &json!(plain.len()),
            &json!(zipped.len()),
            &json!("gzip"),
            &json!("gzip")
        )
    );
    assert_eq!(
        (
            &lines[1]["bytes"],
            &lines[1]["wire_bytes"],
            &lines[1]["encoding"]
        ),
        (&json!(plain.len()), &json!(plain.len()), &json!(""))
    );
}

/// kube-rs built with its `gzip` feature (as the workspace builds it) asks for gzip and decodes
/// it: the same Pods as a client that does not ask.
#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_decodes_the_sims_gzip() {
    let server = sim("1.33", 600).await;
    let zipped: Vec<Pod> = Api::<Pod>::all(server.client())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let r = last(&server);
    assert_eq!(
        (r.accept_encoding.as_str(), r.encoding.as_str()),
        ("gzip", "gzip")
    );
    assert!(r.wire_bytes.unwrap() < r.bytes.unwrap(), "{r:?}");
    let plain: Vec<Pod> = Api::<Pod>::all(raw_client(&server))
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(last(&server).encoding, "");
    assert_eq!(zipped.len(), 600);
    assert_eq!(zipped, plain);
}

fn kubectl_get_pods(kubectl: &Path, server: &Server, cache: &Path) -> Value {
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(server.kubeconfig_path())
        .arg("--cache-dir")
        .arg(cache)
        .args(["get", "pods", "-A", "-o", "json"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl get pods: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl prints JSON")
}

/// Real kubectl (the dispatcher on PATH, which picks the kubectl for the server's version)
/// asks for gzip (Go's transport does), receives the Pod pages gzipped from 1.16 and never on
/// 1.14, and prints the same objects as with compression off.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_gets_the_same_pods_gzipped_or_not() {
    let Some(kubectl) = kube_sim::testenv::require_kubectl() else {
        return;
    };
    for (version, gzips) in [("1.14", false), ("1.16", true), ("1.33", true)] {
        // 1 200 Pods: kubectl pages by 500, so every page (500, 500, 200) is over 128 KiB.
        let server = sim(version, 1200).await;
        let cache = tempfile::tempdir().unwrap();
        let run = |server: &Server| {
            tokio::task::block_in_place(|| kubectl_get_pods(&kubectl, server, cache.path()))
        };
        server.reset_requests();
        let with = run(&server);
        let pages: Vec<RequestRecord> = server
            .requests()
            .records
            .into_iter()
            .filter(|r| r.path == "/api/v1/pods")
            .collect();
        assert_eq!(pages.len(), 3, "{version}: {pages:?}");
        for p in &pages {
            assert!(
                p.accept_encoding.contains("gzip"),
                "{version}: kubectl asks: {p:?}"
            );
            assert!(p.bytes.unwrap() > THRESHOLD as u64, "{version}: {p:?}");
            if gzips {
                assert_eq!(p.encoding, "gzip", "{version}");
                assert!(
                    p.wire_bytes.unwrap() * 5 < p.bytes.unwrap(),
                    "{version}: {p:?}"
                );
            } else {
                assert_eq!(
                    (p.encoding.as_str(), p.wire_bytes),
                    ("", p.bytes),
                    "{version}"
                );
            }
        }
        server.set_response_compression(false);
        server.reset_requests();
        let without = run(&server);
        assert!(
            server
                .requests()
                .records
                .iter()
                .all(|r| r.encoding.is_empty() || r.path == "/openapi/v2"),
            "{version}: gate off"
        );
        assert_eq!(with["items"].as_array().unwrap().len(), 1200, "{version}");
        assert_eq!(with, without, "{version}: the same objects either way");
    }
}
