//! The realistic simulated cluster of `cargo xtask bench` (issue #18): what a production mesh
//! holds besides the objects doctor's checks are about — Pods with injected sidecars, thousands of
//! Secrets, Helm release Secrets of ~150 KB — generated deterministically, so every run lists the
//! same bytes.

use serde_json::{Value, json};

/// How many objects of each kind the realistic cluster holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Application namespaces (`app-0` …), all labelled for injection.
    pub(crate) namespaces: usize,
    /// DestinationRules, spread over the namespaces.
    pub(crate) destination_rules: usize,
    /// Pods with an injected sidecar.
    pub(crate) pods: usize,
    /// Ordinary Secrets (Opaque, TLS, registry credentials, service-account tokens).
    pub(crate) secrets: usize,
    /// Helm release Secrets (`type: helm.sh/release.v1`).
    pub(crate) helm_releases: usize,
    /// Size of each Helm release's `data.release` (base64 text, bytes).
    pub(crate) helm_release_bytes: usize,
    /// Services (one Deployment, ServiceAccount and PeerAuthentication each).
    pub(crate) services: usize,
}

/// The cluster of issue #18: 10 000 DestinationRules, 20 000 Pods with sidecars, 5 000 Secrets
/// and 500 Helm release Secrets of ~150 KB, 2 000 Services and PeerAuthentications.
pub(crate) const REALISTIC: Shape = Shape {
    namespaces: 50,
    destination_rules: 10_000,
    pods: 20_000,
    secrets: 5_000,
    helm_releases: 500,
    helm_release_bytes: 150_000,
    services: 2_000,
};

impl Shape {
    /// The same cluster with every count divided by `factor` (Helm payloads keep their size).
    pub(crate) fn divided(self, factor: usize) -> Shape {
        let d = |n: usize| (n / factor).max(1);
        Shape {
            namespaces: d(self.namespaces),
            destination_rules: d(self.destination_rules),
            pods: d(self.pods),
            secrets: d(self.secrets),
            helm_releases: d(self.helm_releases),
            helm_release_bytes: self.helm_release_bytes,
            services: d(self.services),
        }
    }

    /// One line for BENCHMARKS.md.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} DestinationRules, {} Pods with sidecars, {} Secrets + {} Helm release Secrets of {} KB, {} Services/Deployments/ServiceAccounts/PeerAuthentications in {} namespaces",
            self.destination_rules,
            self.pods,
            self.secrets,
            self.helm_releases,
            self.helm_release_bytes / 1000,
            self.services,
            self.namespaces
        )
    }
}

/// splitmix64: a fixed seed gives the same cluster on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` (rounded down to a multiple of 4) characters of the base64 alphabet: valid base64
    /// of random bytes, as a Secret's `data` values are.
    fn base64(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let len = len / 4 * 4;
        let mut s = String::with_capacity(len);
        while s.len() < len {
            let mut r = self.next();
            for _ in 0..10 {
                if s.len() == len {
                    break;
                }
                s.push(ALPHABET[(r & 63) as usize] as char);
                r >>= 6;
            }
        }
        s
    }
}

fn ns_name(i: usize) -> String {
    format!("app-{i}")
}

/// Every object of the realistic cluster (to add to the `modern` scenario with `Server::load`).
pub(crate) fn objects(shape: &Shape) -> Vec<Value> {
    let mut rng = Rng(0x6D65_7368_766D_0018);
    let mut objs = Vec::new();
    for i in 0..shape.namespaces {
        objs.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns_name(i), "labels": {"istio-injection": "enabled", "kubernetes.io/metadata.name": ns_name(i)}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}));
    }
    for i in 0..shape.services {
        let ns = ns_name(i % shape.namespaces);
        let app = format!("svc-{i}");
        objs.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": app, "namespace": ns, "labels": {"app": app}},
            "spec": {"type": "ClusterIP",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}, {"name": "grpc", "port": 9090, "protocol": "TCP", "targetPort": 9090}],
                "selector": {"app": app}, "sessionAffinity": "None"}}));
        objs.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": app, "namespace": ns}}));
        objs.push(
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": format!("pa-{i}"), "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": app}}, "mtls": {"mode": "STRICT"}}}),
        );
        objs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": ns, "labels": {"app": app}},
            "spec": {"replicas": (shape.pods / shape.services).max(1), "selector": {"matchLabels": {"app": app}},
                "template": {"metadata": {"labels": {"app": app, "version": "v1"}},
                    "spec": {"serviceAccountName": app, "containers": [app_container(&app)]}}}}));
    }
    for i in 0..shape.destination_rules {
        let ns = ns_name(i % shape.namespaces);
        let svc = i % shape.services.max(1);
        objs.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": format!("dr-{i}"), "namespace": ns},
            "spec": {"host": format!("svc-{svc}.{}.svc.cluster.local", ns_name(svc % shape.namespaces)),
                "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}, "connectionPool": {"http": {"http2MaxRequests": 1000, "maxRequestsPerConnection": 10}},
                    "outlierDetection": {"consecutive5xxErrors": 7, "interval": "5m", "baseEjectionTime": "15m"}},
                "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}}));
    }
    for i in 0..shape.pods {
        let svc = i % shape.services.max(1);
        objs.push(pod(
            i,
            &format!("svc-{svc}"),
            &ns_name(svc % shape.namespaces),
            &mut rng,
        ));
    }
    for i in 0..shape.secrets {
        objs.push(secret(i, &ns_name(i % shape.namespaces), &mut rng));
    }
    for i in 0..shape.helm_releases {
        // A release and its revisions: `sh.helm.release.v1.<release>.v<revision>`
        // (helm/helm@v3.16.0 pkg/storage/driver/secrets.go: newSecretsObject; labels name, owner,
        // status, version; type helm.sh/release.v1). Its `release` is base64 of the
        // gzipped release JSON, base64-encoded again by the Secret: incompressible text.
        let release = format!("rel-{}", i / 5);
        let revision = i % 5 + 1;
        let status = if revision == 5 {
            "deployed"
        } else {
            "superseded"
        };
        objs.push(json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {"name": format!("sh.helm.release.v1.{release}.v{revision}"), "namespace": ns_name(i / 5 % shape.namespaces),
                "labels": {"name": release, "owner": "helm", "status": status, "version": revision.to_string()}},
            "data": {"release": rng.base64(shape.helm_release_bytes)}}));
    }
    objs
}

fn app_container(app: &str) -> Value {
    json!({"name": app, "image": format!("registry.example.com/shop/{app}:1.4.2"), "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"name": "grpc", "containerPort": 9090, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"})
}

/// A Pod as Istio's injector leaves it: labels `security.istio.io/tlsMode: istio` and the
/// canonical service, annotation `sidecar.istio.io/status`, init container `istio-init`,
/// container `istio-proxy` with its env, probes and volumes — the shape of istio/istio
/// pkg/kube/inject/testdata/inject/hello.yaml.injected (commit 1bac217c325b) with the
/// annotations and volumes of a 1.2x injector — plus the status the kubelet reports.
///
/// The pods of one Deployment share its ReplicaSet, as on a cluster at rest: the Deployment
/// controller makes one ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`,
/// and labels its pods with that hash (kubernetes/kubernetes pkg/controller/deployment/sync.go
/// `getNewReplicaSet`).
fn pod(i: usize, app: &str, ns: &str, rng: &mut Rng) -> Value {
    let (hash, rs_uid) = replica_set(app);
    let suffix = format!("{:05x}", rng.next() & 0xF_FFFF);
    let name = format!("{app}-{}-{suffix}", &hash[..10]);
    let ip = format!("10.244.{}.{}", i / 250 % 256, i % 250 + 2);
    let host_ip = format!("192.168.{}.{}", i / 2000 % 256, i / 20 % 100 + 10);
    let status = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#;
    let field = |path: &str| json!({"fieldRef": {"apiVersion": "v1", "fieldPath": path}});
    let proxy = json!({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "imagePullPolicy": "IfNotPresent",
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local", "--proxyLogLevel=warning",
            "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "env": [
            {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
            {"name": "CA_ADDR", "value": "istiod.istio-system.svc:15012"},
            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "INSTANCE_IP", "valueFrom": field("status.podIP")},
            {"name": "SERVICE_ACCOUNT", "valueFrom": field("spec.serviceAccountName")},
            {"name": "HOST_IP", "valueFrom": field("status.hostIP")},
            {"name": "ISTIO_CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"divisor": "0", "resource": "limits.cpu"}}},
            {"name": "PROXY_CONFIG", "value": "{}\n"},
            {"name": "ISTIO_META_POD_PORTS", "value": "[\n    {\"name\":\"http\",\"containerPort\":8080,\"protocol\":\"TCP\"}\n    ,{\"name\":\"grpc\",\"containerPort\":9090,\"protocol\":\"TCP\"}\n]"},
            {"name": "ISTIO_META_APP_CONTAINERS", "value": app},
            {"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": {"divisor": "0", "resource": "limits.memory"}}},
            {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"divisor": "0", "resource": "limits.cpu"}}},
            {"name": "ISTIO_META_CLUSTER_ID", "value": "cluster1"},
            {"name": "ISTIO_META_NODE_NAME", "valueFrom": field("spec.nodeName")},
            {"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"},
            {"name": "ISTIO_META_WORKLOAD_NAME", "value": app},
            {"name": "ISTIO_META_OWNER", "value": format!("kubernetes://apis/apps/v1/namespaces/{ns}/deployments/{app}")},
            {"name": "ISTIO_META_MESH_ID", "value": "mesh1"},
            {"name": "TRUST_DOMAIN", "value": "cluster.local"},
            {"name": "ISTIO_META_NETWORK", "value": "network1"}],
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": {"failureThreshold": 4, "httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"}, "periodSeconds": 15, "successThreshold": 1, "timeoutSeconds": 3},
        "startupProbe": {"failureThreshold": 600, "httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"}, "periodSeconds": 1, "successThreshold": 1, "timeoutSeconds": 3},
        "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "privileged": false,
            "readOnlyRootFilesystem": true, "runAsGroup": 1337, "runAsNonRoot": true, "runAsUser": 1337},
        "volumeMounts": [
            {"mountPath": "/var/run/secrets/workload-spiffe-uds", "name": "workload-socket"},
            {"mountPath": "/var/run/secrets/credential-uds", "name": "credential-socket"},
            {"mountPath": "/var/run/secrets/workload-spiffe-credentials", "name": "workload-certs"},
            {"mountPath": "/var/run/secrets/istio", "name": "istiod-ca-cert"},
            {"mountPath": "/var/lib/istio/data", "name": "istio-data"},
            {"mountPath": "/etc/istio/proxy", "name": "istio-envoy"},
            {"mountPath": "/var/run/secrets/tokens", "name": "istio-token"},
            {"mountPath": "/etc/istio/pod", "name": "istio-podinfo"},
            {"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access", "readOnly": true}],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"});
    let init = json!({"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.0", "imagePullPolicy": "IfNotPresent",
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
        "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": false, "readOnlyRootFilesystem": false, "runAsGroup": 0, "runAsNonRoot": false, "runAsUser": 0}});
    let running = |name: &str, image: &str| {
        json!({"name": name, "image": image, "imageID": format!("{image}@sha256:{:016x}{:016x}", 0x5eed_u64, 0x1e2_u64), "ready": true,
            "restartCount": 0, "started": true, "containerID": format!("containerd://{hash}{suffix}"),
            "state": {"running": {"startedAt": "2026-11-30T08:15:27Z"}}, "lastState": {}})
    };
    let condition = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-30T08:15:29Z"});
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "generateName": format!("{app}-{}-", &hash[..10]),
            "labels": {"app": app, "version": "v1", "pod-template-hash": &hash[..10],
                "security.istio.io/tlsMode": "istio", "service.istio.io/canonical-name": app, "service.istio.io/canonical-revision": "v1"},
            "annotations": {"istio.io/rev": "default", "kubectl.kubernetes.io/default-container": app,
                "kubectl.kubernetes.io/default-logs-container": app, "prometheus.io/path": "/stats/prometheus",
                "prometheus.io/port": "15020", "prometheus.io/scrape": "true", "sidecar.istio.io/status": status},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{}", &hash[..10]),
                "uid": rs_uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"serviceAccountName": app, "nodeName": format!("node-{}", i % 40), "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler", "terminationGracePeriodSeconds": 30, "enableServiceLinks": true, "priority": 0,
            "initContainers": [init], "containers": [app_container(app), proxy],
            "volumes": [
                {"name": "workload-socket", "emptyDir": {}}, {"name": "credential-socket", "emptyDir": {}},
                {"name": "workload-certs", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
                {"name": "istio-data", "emptyDir": {}},
                {"name": "istio-podinfo", "downwardAPI": {"defaultMode": 420, "items": [
                    {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations"}}]}},
                {"name": "istio-token", "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                {"name": "istiod-ca-cert", "configMap": {"defaultMode": 420, "name": "istio-ca-root-cert"}},
                {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "tolerations": [
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "qosClass": "Burstable", "startTime": "2026-11-30T08:15:20Z",
            "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
            "initContainerStatuses": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.0", "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-11-30T08:15:21Z", "finishedAt": "2026-11-30T08:15:21Z"}}}],
            "containerStatuses": [running(app, &format!("registry.example.com/shop/{app}:1.4.2")), running("istio-proxy", "docker.io/istio/proxyv2:1.24.0")]}})
}

/// The pod-template-hash and uid of Deployment `app`'s ReplicaSet (the same on every call).
fn replica_set(app: &str) -> (String, String) {
    // FNV-1a of the name seeds the generator: a fixed ReplicaSet per Deployment.
    let seed = app.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = Rng(seed);
    let hash = format!("{:010x}", rng.next() & 0xFF_FFFF_FFFF);
    let uid = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        rng.next() & 0xFFFF_FFFF,
        rng.next() & 0xFFFF_FFFF_FFFF
    );
    (hash, uid)
}

/// An ordinary Secret: a mix of the types clusters hold.
fn secret(i: usize, ns: &str, rng: &mut Rng) -> Value {
    let (ty, data) = match i % 10 {
        0..=3 => (
            "Opaque",
            json!({"username": rng.base64(12), "password": rng.base64(32), "config.json": rng.base64(800)}),
        ),
        4..=6 => (
            "kubernetes.io/tls",
            json!({"tls.crt": rng.base64(1_600), "tls.key": rng.base64(2_300), "ca.crt": rng.base64(1_500)}),
        ),
        7 | 8 => (
            "kubernetes.io/dockerconfigjson",
            json!({".dockerconfigjson": rng.base64(240)}),
        ),
        _ => (
            "kubernetes.io/service-account-token",
            json!({"token": rng.base64(1_200), "ca.crt": rng.base64(1_500), "namespace": rng.base64(12)}),
        ),
    };
    let mut s = json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
        "metadata": {"name": format!("secret-{i}"), "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "shop"}},
        "data": data});
    if ty == "kubernetes.io/service-account-token" {
        s["metadata"]["annotations"] = json!({"kubernetes.io/service-account.name": "default"});
    }
    s
}

/// The cluster-wide collection a request path reads, e.g. `/api/v1/namespaces/ns/secrets/x`
/// → `/api/v1/secrets`, `/api/v1/namespaces/ns` → `/api/v1/namespaces`; None for discovery.
pub(crate) fn collection(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (["namespaces", _, resource, ..] | [resource, ..]) = rest else {
        return None;
    };
    Some(format!("{prefix}/{resource}"))
}

/// kubectl's name for a collection: `pods`, `destinationrules.networking.istio.io`.
pub(crate) fn kubectl_resource(collection: &str) -> String {
    let segs: Vec<&str> = collection.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", group, _, resource] => format!("{resource}.{group}"),
        [.., resource] => (*resource).to_string(),
        [] => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_are_cluster_wide_lists() {
        assert_eq!(
            collection("/api/v1/namespaces/istio-system/secrets/cacerts").as_deref(),
            Some("/api/v1/secrets")
        );
        assert_eq!(collection("/api/v1/pods").as_deref(), Some("/api/v1/pods"));
        assert_eq!(
            collection("/api/v1/namespaces/expandvm").as_deref(),
            Some("/api/v1/namespaces")
        );
        assert_eq!(
            collection("/apis/networking.istio.io/v1/namespaces/a/destinationrules").as_deref(),
            Some("/apis/networking.istio.io/v1/destinationrules")
        );
        assert_eq!(collection("/apis/networking.istio.io/v1"), None);
        assert_eq!(collection("/api"), None);
        assert_eq!(
            kubectl_resource("/apis/networking.istio.io/v1/destinationrules"),
            "destinationrules.networking.istio.io"
        );
        assert_eq!(kubectl_resource("/api/v1/secrets"), "secrets");
    }

    #[test]
    fn the_cluster_is_deterministic_and_shaped_as_asked() {
        let shape = REALISTIC.divided(100);
        let a = objects(&shape);
        assert_eq!(a, objects(&shape));
        let count = |kind: &str| a.iter().filter(|o| o["kind"] == kind).count();
        assert_eq!(count("DestinationRule"), 100);
        assert_eq!(count("Pod"), 200);
        assert_eq!(count("Secret"), 50 + 5);
        let helm: Vec<&Value> = a
            .iter()
            .filter(|o| o["type"] == "helm.sh/release.v1")
            .collect();
        assert_eq!(helm.len(), 5);
        let release = helm[0]["data"]["release"].as_str().unwrap();
        assert_eq!(release.len(), 150_000);
        assert!(
            release
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        );
        let pod = a.iter().find(|o| o["kind"] == "Pod").unwrap();
        assert_eq!(
            pod["metadata"]["labels"]["security.istio.io/tlsMode"],
            "istio"
        );
        assert!(
            pod["metadata"]["annotations"]["sidecar.istio.io/status"]
                .as_str()
                .unwrap()
                .contains("istio-proxy")
        );
        assert_eq!(pod["spec"]["containers"][1]["name"], "istio-proxy");
        // The pods of one Deployment share its ReplicaSet; two Deployments do not.
        let owner = |o: &Value| o["metadata"]["ownerReferences"][0].clone();
        let pods: Vec<&Value> = a.iter().filter(|o| o["kind"] == "Pod").collect();
        let siblings: Vec<&&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == pod["metadata"]["labels"]["app"])
            .collect();
        assert!(siblings.len() > 1);
        assert!(siblings.iter().all(|p| owner(p) == owner(pod)
            && p["metadata"]["labels"]["pod-template-hash"]
                == pod["metadata"]["labels"]["pod-template-hash"]));
        assert!(pods.iter().any(|p| owner(p)["name"] != owner(pod)["name"]));
        let bytes = serde_json::to_vec(pod).unwrap().len();
        assert!((4_000..12_000).contains(&bytes), "pod of {bytes} bytes");
    }
}
