//! Fixture builders for check tests: `Fixture::legacy().with_default_dr().run(&Check)`.

use super::{Check, CheckContext, CheckOptions, Finding, Severity};
use crate::snapshot::{BundleFile, Snapshot, VmBundle};

/// The legacy (1.4) control plane with mesh expansion through the ingress gateway, one injected
/// app namespace, and the PERMISSIVE MeshPolicy the 1.4 install creates — but none of the
/// Gotchas' DestinationRules.
pub(crate) const LEGACY: &str = r"
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istio-citadel, namespace: istio-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istio-pilot, namespace: istio-system}
---
apiVersion: v1
kind: Service
metadata: {name: istio-citadel, namespace: istio-system}
spec:
  selector: {istio: citadel}
  ports: [{name: grpc-citadel, port: 8060}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-pilot, namespace: istio-system}
spec:
  selector: {istio: pilot}
  ports: [{name: grpc-xds, port: 15010}, {name: https-xds, port: 15011}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system, labels: {istio: ingressgateway}}
spec:
  type: LoadBalancer
  selector: {istio: ingressgateway}
  ports: [{name: tcp-pilot-grpc-tls, port: 15011}, {name: tcp-citadel-grpc-tls, port: 8060}, {name: http2, port: 80}]
status:
  loadBalancer: {ingress: [{ip: 35.1.2.3}]}
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: meshexpansion-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 15011, protocol: TCP, name: tcp-pilot}
    hosts: ['*']
  - port: {number: 8060, protocol: TCP, name: tcp-citadel}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: meshexpansion-vs-pilot, namespace: istio-system}
spec:
  hosts: [istio-pilot.istio-system.svc.cluster.local]
  gateways: [meshexpansion-gateway]
  tcp:
  - match: [{port: 15011}]
    route: [{destination: {host: istio-pilot.istio-system.svc.cluster.local, port: {number: 15011}}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: meshexpansion-vs-citadel, namespace: istio-system}
spec:
  hosts: [istio-citadel.istio-system.svc.cluster.local]
  gateways: [meshexpansion-gateway]
  tcp:
  - match: [{port: 8060}]
    route: [{destination: {host: istio-citadel.istio-system.svc.cluster.local, port: {number: 8060}}}]
---
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata: {name: default}
spec:
  peers: [{mtls: {mode: PERMISSIVE}}]
---
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
";

/// The runbook's default mesh-wide mutual rule.
pub(crate) const DEFAULT_DR: &str = r"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec:
  host: '*.local'
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
";

/// The runbook's Citadel plaintext rule.
pub(crate) const CITADEL_DR: &str = r"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: meshexpansion-dr-citadel, namespace: istio-system}
spec:
  host: istio-citadel.istio-system.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
    - port: {number: 8060}
      tls: {mode: DISABLE}
";

/// A modern istiod control plane with an east-west gateway exposing istiod (samples/multicluster).
pub(crate) const MODERN: &str = r"
apiVersion: v1
kind: Namespace
metadata: {name: istio-system, labels: {topology.istio.io/network: network1}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istiod, namespace: istio-system}
---
apiVersion: v1
kind: Service
metadata: {name: istiod, namespace: istio-system}
spec:
  selector: {app: istiod}
  ports: [{name: grpc-xds, port: 15012}, {name: https-webhook, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-eastwestgateway, namespace: istio-system, labels: {istio: eastwestgateway, topology.istio.io/network: network1}}
spec:
  type: LoadBalancer
  selector: {istio: eastwestgateway}
  ports: [{name: tls, port: 15443}, {name: tls-istiod, port: 15012}, {name: tls-webhook, port: 15017}]
status:
  loadBalancer: {ingress: [{ip: 34.9.8.7}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istiod-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {name: tls-istiod, number: 15012, protocol: tls}
    tls: {mode: PASSTHROUGH}
    hosts: ['*']
  - port: {name: tls-istiodwebhook, number: 15017, protocol: tls}
    tls: {mode: PASSTHROUGH}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: istiod-vs, namespace: istio-system}
spec:
  hosts: ['*']
  gateways: [istiod-gateway]
  tls:
  - match: [{port: 15012, sniHosts: ['*']}]
    route: [{destination: {host: istiod.istio-system.svc.cluster.local, port: {number: 15012}}}]
  - match: [{port: 15017, sniHosts: ['*']}]
    route: [{destination: {host: istiod.istio-system.svc.cluster.local, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ['*.local']
";

/// Builds a snapshot from YAML pieces, plus an optional bundle.
#[derive(Default)]
pub(crate) struct Fixture {
    yaml: Vec<String>,
    live: bool,
    bundle: Option<VmBundle>,
    opts: CheckOptions,
    others: Vec<Snapshot>,
}

/// 2026-01-01T00:00:00Z: tests judge expiry against a fixed "now".
pub(crate) const NOW: i64 = 1_767_225_600;

impl Fixture {
    /// No objects at all.
    pub(crate) fn empty() -> Self {
        Self {
            opts: CheckOptions {
                now: Some(NOW),
                ..CheckOptions::default()
            },
            ..Self::default()
        }
    }
    /// The legacy mesh.
    pub(crate) fn legacy() -> Self {
        Self::empty().with(LEGACY)
    }
    /// The modern mesh.
    pub(crate) fn modern() -> Self {
        Self::empty().with(MODERN)
    }
    /// Add the runbook's default DestinationRule.
    pub(crate) fn with_default_dr(self) -> Self {
        self.with(DEFAULT_DR)
    }
    /// Add the runbook's Citadel DestinationRule.
    pub(crate) fn with_citadel_dr(self) -> Self {
        self.with(CITADEL_DR)
    }
    /// Add manifests.
    pub(crate) fn with(mut self, yaml: &str) -> Self {
        self.yaml.push(yaml.to_string());
        self
    }
    /// Replace text in the manifests added so far (to break one detail of a base mesh).
    pub(crate) fn snapshot_yaml_replace(mut self, from: &str, to: &str) -> Self {
        let mut hit = false;
        for y in &mut self.yaml {
            if y.contains(from) {
                *y = y.replace(from, to);
                hit = true;
            }
        }
        assert!(hit, "fixture has no {from:?}");
        self
    }
    /// Judge as Pilot 1.`minor`: an `istiod` (1.4: `istio-pilot`) Deployment with that image.
    pub(crate) fn release(self, minor: u32) -> Self {
        let name = if minor == 4 { "istio-pilot" } else { "istiod" };
        self.with(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: istio-system}}\nspec: {{template: {{spec: {{containers: [{{name: discovery, image: 'docker.io/istio/pilot:1.{minor}.0'}}]}}}}}}\n"
        ))
    }
    /// Judge at `now` (seconds since the epoch) instead of [`NOW`].
    pub(crate) fn now(mut self, now: i64) -> Self {
        self.opts.now = Some(now);
        self
    }
    /// Judge with `--expiry-warning-days DAYS`.
    pub(crate) fn expiry_warning_days(mut self, days: u32) -> Self {
        self.opts.expiry_warning_days = Some(days);
        self
    }
    /// Attach bundle files read from `path` (a folder or `.tar.gz`, as doctor names it).
    pub(crate) fn bundle_at(mut self, path: &str, files: &[(&str, &[u8], u32)]) -> Self {
        self = self.bundle(files);
        if let Some(b) = &mut self.bundle {
            b.path = path.into();
        }
        self
    }
    /// Force auto mTLS.
    pub(crate) fn auto_mtls(mut self, on: bool) -> Self {
        self.opts.auto_mtls = Some(on);
        self
    }
    /// Attach bundle files `(name, content, mode)`.
    pub(crate) fn bundle(mut self, files: &[(&str, &[u8], u32)]) -> Self {
        self.bundle = Some(VmBundle {
            path: "bundle".into(),
            files: files
                .iter()
                .map(|(n, d, m)| {
                    (
                        (*n).to_string(),
                        BundleFile {
                            data: d.to_vec(),
                            mode: *m,
                        },
                    )
                })
                .collect(),
        });
        self
    }
    /// Judge the objects as read from a live cluster (context `test`), not from manifests.
    pub(crate) fn live(mut self) -> Self {
        self.live = true;
        self
    }
    /// Another cluster (for cross-context checks).
    pub(crate) fn other(mut self, snap: Snapshot) -> Self {
        self.others.push(snap);
        self
    }
    /// The snapshot.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let text = self.yaml.join("\n---\n");
        let mut snap = Snapshot::from_yaml(&text).expect("fixture YAML parses");
        snap.bundle.clone_from(&self.bundle);
        if self.live {
            snap.source = crate::snapshot::SourceKind::Live;
            // A live read lists every kind (an empty list is an answer too).
            snap.known.extend([
                crate::snapshot::Kind::Namespace,
                crate::snapshot::Kind::ServiceAccount,
                crate::snapshot::Kind::Secret,
                crate::snapshot::Kind::ConfigMap,
            ]);
            snap.context = Some("test".into());
        }
        snap
    }
    /// Run one check.
    pub(crate) fn run(&self, check: &dyn Check) -> Vec<Finding> {
        let snap = self.snapshot();
        let ctx = CheckContext::new(&snap, &self.opts, self.others.iter().collect());
        let out = check.run(&snap, &ctx);
        assert!(!out.is_empty(), "{} returned no finding", check.id());
        for f in &out {
            assert_eq!(f.check, check.id());
        }
        out
    }
}

/// The worst severity.
pub(crate) fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Pass)
}

/// `(severity, object)` of every non-pass finding.
pub(crate) fn flagged(findings: &[Finding]) -> Vec<(Severity, String)> {
    findings
        .iter()
        .filter(|f| f.severity != Severity::Pass)
        .map(|f| (f.severity, f.object.clone()))
        .collect()
}

/// Assert the worst severity, printing the findings when it differs.
#[track_caller]
pub(crate) fn expect(findings: &[Finding], severity: Severity, case: &str) {
    assert_eq!(worst(findings), severity, "{case}: {findings:#?}");
}
