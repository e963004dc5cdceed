//! Emulated controllers: Citadel's per-ServiceAccount `istio.<sa>` secrets (Istio 1.4) and
//! istiod's `istio-ca-root-cert` ConfigMaps (modern Istio).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::ca::SimCa;
use crate::store::State;
use crate::util::{name_of, namespace_of};

/// The trust domain both eras default to.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// Namespaces istiod's namespace controller leaves alone (Istio's `inject.IgnoredNamespaces`).
const ISTIOD_IGNORED: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Cached CAs, so certificates stay stable between reconciles.
#[derive(Default)]
pub struct Controllers {
    plugged: Option<(String, Arc<SimCa>)>,
    self_signed: Option<Arc<SimCa>>,
    /// The API server's CA, which `kube-root-ca.crt` publishes.
    pub api_ca_pem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Citadel,
    Istiod,
}

fn find_control_plane(state: &State) -> Option<(Era, String)> {
    state
        .iter_resource("apps/deployments", None)
        .find_map(|(k, _)| match k.2.as_str() {
            "istio-citadel" => Some((Era::Citadel, k.1.clone())),
            "istiod" => Some((Era::Istiod, k.1.clone())),
            _ => None,
        })
}

fn decode_data(secret: &Value) -> BTreeMap<String, Vec<u8>> {
    secret
        .get("data")
        .and_then(Value::as_object)
        .map(|d| {
            d.iter()
                .filter_map(|(k, v)| Some((k.clone(), STANDARD.decode(v.as_str()?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The CA the control plane signs with: `cacerts` in its namespace when usable, else a
/// self-signed root the sim keeps for its lifetime.
fn current_ca(state: &mut State, istio_ns: &str) -> Arc<SimCa> {
    if let Some(cacerts) = state.get_obj("/secrets", istio_ns, "cacerts") {
        let fingerprint = format!(
            "{istio_ns}/{}",
            cacerts
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
        );
        if let Some((fp, ca)) = &state.controllers.plugged
            && *fp == fingerprint
        {
            return ca.clone();
        }
        if let Ok(ca) = SimCa::from_cacerts(&decode_data(cacerts)) {
            let ca = Arc::new(ca);
            state.controllers.plugged = Some((fingerprint, ca.clone()));
            return ca;
        }
        // An unusable cacerts: real Citadel/istiod would crash-loop; the sim keeps serving
        // with its own root so doctor can still observe the broken secret.
    }
    state
        .controllers
        .self_signed
        .get_or_insert_with(|| Arc::new(SimCa::self_signed(TRUST_DOMAIN)))
        .clone()
}

/// Brings every emulated controller's objects in line with the cluster; cheap when nothing changed.
pub fn reconcile(state: &mut State) {
    reconcile_namespaces(state);
    let Some((era, istio_ns)) = find_control_plane(state) else {
        return;
    };
    let ca = current_ca(state, &istio_ns);
    let root = ca.root_pem();
    match era {
        Era::Citadel => reconcile_citadel(state, &ca, &root),
        Era::Istiod => reconcile_istiod(state, &root),
    }
}

/// kube-controller-manager's share: every namespace has the ServiceAccount `default` (re-created
/// when deleted) and the ConfigMap `kube-root-ca.crt` with the API server's CA.
fn reconcile_namespaces(state: &mut State) {
    let namespaces: Vec<String> = state
        .iter_resource("/namespaces", None)
        .map(|(k, _)| k.2.clone())
        .collect();
    let ca = state.controllers.api_ca_pem.clone();
    for ns in namespaces {
        if state.get_obj("/serviceaccounts", &ns, "default").is_none() {
            state
                .upsert(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": ns}}))
                .expect("default ServiceAccount is valid");
        }
        if ca.is_empty() {
            continue;
        }
        let current = state
            .get_obj("/configmaps", &ns, "kube-root-ca.crt")
            .and_then(|c| c.pointer("/data/ca.crt"))
            .and_then(Value::as_str);
        if current != Some(ca.as_str()) {
            state
                .upsert(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                 "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                    "data": {"ca.crt": ca}}))
                .expect("kube-root-ca.crt ConfigMap is valid");
        }
    }
}

fn reconcile_citadel(state: &mut State, ca: &SimCa, root: &str) {
    let accounts: Vec<(String, String)> = state
        .iter_resource("/serviceaccounts", None)
        .map(|(k, _)| (k.1.clone(), k.2.clone()))
        .collect();
    for (ns, sa) in &accounts {
        let secret_name = format!("istio.{sa}");
        let current = state.get_obj("/secrets", ns, &secret_name).map(|s| {
            decode_data(s)
                .get("root-cert.pem")
                .cloned()
                .unwrap_or_default()
        });
        if current.as_deref() == Some(root.as_bytes()) {
            continue;
        }
        let data: serde_json::Map<String, Value> = ca
            .issue_workload(TRUST_DOMAIN, ns, sa)
            .into_iter()
            .map(|(k, v)| (k, json!(STANDARD.encode(v))))
            .collect();
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": ns,
                "annotations": {"istio.io/service-account.name": sa},
            },
            "type": "istio.io/key-and-cert",
            "data": data,
        });
        // Well-formed by construction; a failure is a sim bug.
        state.upsert(secret).expect("citadel secret is valid");
    }
    // Citadel deletes the secret of a ServiceAccount that is gone.
    let orphans: Vec<(String, String)> = state
        .iter_resource("/secrets", None)
        .filter(|(_, s)| s.get("type").and_then(Value::as_str) == Some("istio.io/key-and-cert"))
        .filter_map(|(_, s)| {
            let sa = name_of(s).strip_prefix("istio.")?;
            let ns = namespace_of(s);
            (!accounts.iter().any(|(n, a)| n == ns && a == sa))
                .then(|| (ns.to_string(), name_of(s).to_string()))
        })
        .collect();
    for (ns, name) in orphans {
        state.remove("/secrets", &ns, &name);
    }
}

fn reconcile_istiod(state: &mut State, root: &str) {
    let namespaces: Vec<String> = state
        .iter_resource("/namespaces", None)
        .map(|(k, _)| k.2.clone())
        .filter(|n| !ISTIOD_IGNORED.contains(&n.as_str()))
        .collect();
    for ns in namespaces {
        let current = state
            .get_obj("/configmaps", &ns, "istio-ca-root-cert")
            .and_then(|c| c.pointer("/data/root-cert.pem"))
            .and_then(Value::as_str);
        if current == Some(root) {
            continue;
        }
        let cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "istio-ca-root-cert",
                "namespace": ns,
                "labels": {"istio.io/config": "true"},
            },
            "data": {"root-cert.pem": root},
        });
        state
            .upsert(cm)
            .expect("istio-ca-root-cert ConfigMap is valid");
    }
}
