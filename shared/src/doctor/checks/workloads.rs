//! The workloads doctor judges: live Pods (one per owner), else the pod templates of the
//! controllers read with `-f`, plus bare Pods in the files. Computed once per snapshot
//! ([`crate::doctor::CheckContext::workloads`]) and shared by every workload check.
//!
//! Whether a workload runs (or will run) Istio's sidecar follows the injector:
//! - a running pod has one when it holds the `istio-proxy` container or the injector's
//!   `sidecar.istio.io/status` annotation;
//! - a pod template gets one when the injection webhook is called for its namespace and the
//!   injector then decides to inject. 1.4: the webhook selects namespaces labelled
//!   `istio-injection=enabled` (istio/istio@1.4.2
//!   install/kubernetes/helm/istio/charts/sidecarInjectorWebhook/templates/mutatingwebhook.yaml);
//!   modern: `istio-injection=enabled`, or `istio.io/rev` without `istio-injection`, or — in a
//!   namespace with neither — the pod label `sidecar.istio.io/inject=true`
//!   (istio/istio@1.22.0 manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml:60-137).
//!   The injector skips `hostNetwork` pods and the ignored system namespaces, and reads
//!   `sidecar.istio.io/inject` (`y|yes|true|on` inject, empty uses the default policy, anything
//!   else does not; modern prefers the pod label over the annotation)
//!   (istio/istio@1.4.2 pkg/kube/inject/inject.go:398-430, @1.22.0 pkg/kube/inject/inject.go:196-228).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::doctor::mesh::{PROXY_CONTAINER, SYSTEM_NAMESPACES};
use crate::istio::Era;
use crate::snapshot::{ContainerShape, Kind, Obj, PodShape, Snapshot, borrowed};

/// The injector's status port (`values.global.proxy.statusPort`, meshConfig
/// `defaultConfig.statusPort`): always excluded from inbound capture
/// (istio/istio@1.4.2 install/kubernetes/helm/istio/files/injection-template.yaml:29,
/// @1.22.0 pkg/config/mesh/mesh.go:54).
pub const STATUS_PORT: u32 = 15020;

/// One workload: a running pod, or the pod template of a controller.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    /// The Pod or controller object.
    pub obj: &'a Obj,
    /// `Deployment bookinfo/reviews-v1`, or `Pod bookinfo/x (ReplicaSet reviews-v1-abc)`.
    pub reference: String,
    /// The namespace (`default` when a manifest names none).
    pub ns: String,
    /// Pod (template) metadata.
    meta: Option<&'a ObjectMeta>,
    /// Pod spec, as doctor reads it: a pod's shared one, or a template's read into that shape.
    spec: Option<std::borrow::Cow<'a, PodShape>>,
    /// A running pod (its sidecar, annotations and probes are as injected).
    pub live: bool,
}

/// Whether a workload runs Istio's sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sidecar {
    /// It runs (or will be given) one.
    Yes,
    /// It does not, and why.
    No(String),
    /// The source does not say (no Namespace objects to read injection labels from).
    Unknown,
}

impl<'a> Workload<'a> {
    /// The pod (template) labels.
    pub fn labels(&self) -> BTreeMap<&'a str, &'a str> {
        borrowed(self.meta.and_then(|m| m.labels.as_ref()))
    }

    /// A pod (template) annotation.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.meta?
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// The pod (template) annotations.
    pub fn annotations(&self) -> BTreeMap<&'a str, &'a str> {
        borrowed(self.meta.and_then(|m| m.annotations.as_ref()))
    }

    /// The containers (app containers; `istio-proxy` included when injected).
    pub fn containers(&self) -> impl Iterator<Item = &ContainerShape> {
        self.spec.iter().flat_map(|s| &s.containers)
    }

    /// The app containers: every container but `istio-proxy`.
    pub fn app_containers(&self) -> impl Iterator<Item = &ContainerShape> {
        self.containers().filter(|c| c.name != PROXY_CONTAINER)
    }

    /// `spec.hostNetwork`.
    pub fn host_network(&self) -> bool {
        self.spec.as_ref().and_then(|s| s.host_network) == Some(true)
    }

    /// Whether the pod as it is holds the sidecar (the container or the injector's status).
    pub fn injected(&self) -> bool {
        self.annotation("sidecar.istio.io/status").is_some()
            || self.containers().any(|c| c.name == PROXY_CONTAINER)
    }

    /// A named container port's number, over every container.
    pub fn named_port(&self, name: &str) -> Option<u32> {
        self.containers()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u32::try_from(p.container_port).ok())
    }

    /// A port as a probe or Service names it (number, numeric string, or container port name).
    pub fn port_number(&self, port: &IntOrString) -> Option<u32> {
        match port {
            IntOrString::Int(n) => u32::try_from(*n).ok(),
            IntOrString::String(s) => s.parse().ok().or_else(|| self.named_port(s)),
        }
    }

    /// Inbound ports the sidecar does not capture: the status port (or
    /// `status.sidecar.istio.io/port`) and `traffic.sidecar.istio.io/excludeInboundPorts`
    /// (istio/istio@1.4.2 install/kubernetes/helm/istio/files/injection-template.yaml:27-29,
    /// @1.22.0 manifests/charts/istio-control/istio-discovery/files/injection-template.yaml:56,100-101,
    /// which also excludes 15090 and 15021).
    pub fn uncaptured_ports(&self, era: Option<Era>) -> BTreeSet<u32> {
        let mut out: BTreeSet<u32> = self.excluded_ports().into_iter().collect();
        out.insert(self.status_port());
        if era == Some(Era::Modern) {
            out.extend([15090, 15021]);
        }
        out
    }

    /// The ports `traffic.sidecar.istio.io/excludeInboundPorts` names, in order.
    pub fn excluded_ports(&self) -> Vec<u32> {
        self.annotation("traffic.sidecar.istio.io/excludeInboundPorts")
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    /// The agent's status port for this pod.
    pub fn status_port(&self) -> u32 {
        self.annotation("status.sidecar.istio.io/port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(STATUS_PORT)
    }

    /// Whether the workload runs (or will be given) the sidecar, as the injector decides.
    pub fn sidecar(&self, snap: &Snapshot, era: Option<Era>) -> Sidecar {
        if self.injected() {
            return Sidecar::Yes;
        }
        if self.host_network() {
            return Sidecar::No("hostNetwork: true (the injector skips it)".into());
        }
        if self.live {
            return Sidecar::No("it runs no istio-proxy container".into());
        }
        if SYSTEM_NAMESPACES.contains(&self.ns.as_str()) {
            return Sidecar::No(format!("{} is never injected", self.ns));
        }
        let modern = era != Some(Era::Legacy);
        // Modern: the pod label wins over the annotation (inject.go@1.22.0:219-223).
        let selector = if modern {
            self.labels()
                .get("sidecar.istio.io/inject")
                .copied()
                .or_else(|| self.annotation("sidecar.istio.io/inject"))
        } else {
            self.annotation("sidecar.istio.io/inject")
        }
        .unwrap_or_default()
        .to_ascii_lowercase();
        let explicit_yes = matches!(selector.as_str(), "y" | "yes" | "true" | "on");
        if !selector.is_empty() && !explicit_yes {
            return Sidecar::No(format!("sidecar.istio.io/inject: \"{selector}\""));
        }
        if !snap.knows(Kind::Namespace) {
            return Sidecar::Unknown;
        }
        let ns = snap.get_typed::<Namespace>("", &self.ns);
        let label = |k: &str| ns.and_then(|(n, _)| n.label(k));
        let webhook = if modern {
            label("istio-injection") == Some("enabled")
                || (label("istio-injection").is_none() && label("istio.io/rev").is_some())
                || (label("istio-injection").is_none()
                    && label("istio.io/rev").is_none()
                    && self.labels().get("sidecar.istio.io/inject") == Some(&"true"))
        } else {
            label("istio-injection") == Some("enabled")
        };
        if webhook {
            Sidecar::Yes
        } else {
            Sidecar::No(format!(
                "namespace {} is not labelled for injection{}",
                self.ns,
                if modern {
                    " (istio-injection=enabled or istio.io/rev)"
                } else {
                    " (istio-injection=enabled)"
                }
            ))
        }
    }
}

/// The workloads of a snapshot: live Pods, one per owner (the first pod stands for its
/// ReplicaSet, StatefulSet, …), and the pod templates of `-f` controllers plus bare Pods.
pub fn collect(snap: &Snapshot) -> Vec<Workload<'_>> {
    let mut out = Vec::new();
    let mut seen_owners = BTreeSet::new();
    let live = snap.source == crate::snapshot::SourceKind::Live;
    for (pod, spec) in snap.pods() {
        let owner = pod
            .common_meta()
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| format!("{} {}", o.kind, o.name));
        if let Some(owner) = &owner
            && !seen_owners.insert((pod.namespace().to_string(), owner.clone()))
        {
            continue;
        }
        let ns = if pod.namespace().is_empty() {
            "default"
        } else {
            pod.namespace()
        };
        let reference = match &owner {
            Some(o) => format!("Pod {ns}/{} ({o})", pod.name()),
            None => format!("Pod {ns}/{}", pod.name()),
        };
        out.push(Workload {
            obj: pod,
            reference,
            ns: ns.to_string(),
            meta: Some(pod.common_meta()),
            spec: Some(std::borrow::Cow::Borrowed(spec)),
            live,
        });
    }
    for c in &snap.controllers {
        let Some(template) = c.pod_template() else {
            continue;
        };
        let ns = if c.namespace().is_empty() {
            "default"
        } else {
            c.namespace()
        };
        out.push(Workload {
            obj: c,
            reference: format!("{} {ns}/{}", c.kind(), c.name()),
            ns: ns.to_string(),
            meta: template.metadata.as_ref(),
            spec: template
                .spec
                .as_ref()
                .map(|s| std::borrow::Cow::Owned(PodShape::from(s))),
            live: false,
        });
    }
    out
}

/// Whether a workload belongs to the control plane or the system: the Istio namespace's own
/// workloads and Kubernetes' system namespaces.
pub fn is_system(w: &Workload<'_>, istio_ns: &str) -> bool {
    w.ns == istio_ns || SYSTEM_NAMESPACES.contains(&w.ns.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = r"
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata: {name: rev, labels: {istio.io/rev: canary}}
";

    fn deploy(ns: &str, name: &str, meta: &str, spec: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  template:\n    metadata: {meta}\n    spec: {spec}\n"
        )
    }

    fn sidecar(era: Option<Era>, yaml: &str) -> Sidecar {
        let snap = Snapshot::from_yaml(&format!("{MESH}---\n{yaml}")).unwrap();
        let ws = collect(&snap);
        assert_eq!(ws.len(), 1, "{ws:?}");
        ws[0].sidecar(&snap, era)
    }

    #[test]
    fn injection_follows_the_injector() {
        let c = "{containers: [{name: app, image: x}]}";
        let legacy = Some(Era::Legacy);
        let modern = Some(Era::Modern);
        assert_eq!(sidecar(legacy, &deploy("app", "a", "{}", c)), Sidecar::Yes);
        assert!(matches!(
            sidecar(legacy, &deploy("plain", "a", "{}", c)),
            Sidecar::No(_)
        ));
        assert!(matches!(
            sidecar(
                legacy,
                &deploy(
                    "app",
                    "a",
                    "{annotations: {sidecar.istio.io/inject: 'false'}}",
                    c
                )
            ),
            Sidecar::No(_)
        ));
        assert!(matches!(
            sidecar(
                legacy,
                &deploy(
                    "app",
                    "a",
                    "{}",
                    "{hostNetwork: true, containers: [{name: app}]}"
                )
            ),
            Sidecar::No(_)
        ));
        // istio.io/rev injects only in the modern era.
        assert!(matches!(
            sidecar(legacy, &deploy("rev", "a", "{}", c)),
            Sidecar::No(_)
        ));
        assert_eq!(sidecar(modern, &deploy("rev", "a", "{}", c)), Sidecar::Yes);
        // Modern: the pod label injects in an unlabelled namespace, and wins over the annotation.
        assert_eq!(
            sidecar(
                modern,
                &deploy(
                    "plain",
                    "a",
                    "{labels: {sidecar.istio.io/inject: 'true'}}",
                    c
                )
            ),
            Sidecar::Yes
        );
        assert!(matches!(
            sidecar(
                modern,
                &deploy(
                    "app",
                    "a",
                    "{labels: {sidecar.istio.io/inject: 'false'}, annotations: {sidecar.istio.io/inject: 'true'}}",
                    c
                )
            ),
            Sidecar::No(_)
        ));
        // No Namespace objects: cannot tell.
        let snap = Snapshot::from_yaml(&deploy("app", "a", "{}", c)).unwrap();
        assert_eq!(collect(&snap)[0].sidecar(&snap, legacy), Sidecar::Unknown);
    }

    #[test]
    fn live_pods_count_once_per_owner_and_cronjobs_use_the_job_template() {
        let pods = r"
apiVersion: v1
kind: Pod
metadata: {name: r-1, namespace: app, ownerReferences: [{kind: ReplicaSet, name: r}]}
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: r-2, namespace: app, ownerReferences: [{kind: ReplicaSet, name: r}]}
spec: {containers: [{name: app}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: c, namespace: app}
spec: {jobTemplate: {spec: {template: {metadata: {labels: {a: b}}, spec: {containers: [{name: job}]}}}}}
";
        let snap = Snapshot::from_yaml(pods).unwrap();
        let ws = collect(&snap);
        let refs: Vec<&str> = ws.iter().map(|w| w.reference.as_str()).collect();
        assert_eq!(refs, ["Pod app/r-1 (ReplicaSet r)", "CronJob app/c"]);
        assert_eq!(ws[1].labels().get("a"), Some(&"b"));
    }
}
