//! The Kubernetes version the sim impersonates, and what that version serves and does.
//!
//! Every predicate names the source it was read from, as `repo@tag path:line`. Short names:
//! `apiserver` = github.com/kubernetes/apiserver (tag `kubernetes-1.NN.0`), `apimachinery`,
//! `apiext` = kubernetes/apiextensions-apiserver (same tags), `go-restful` =
//! emicklei/go-restful, `website` = kubernetes/website feature-gate pages
//! (`content/en/docs/reference/command-line-tools-reference/feature-gates/<Gate>.md`, stored
//! commit given), `k/k` = kubernetes/kubernetes (stored single-file revisions: the repository is
//! too large to fetch whole, so the release of a revision is inferred from its content and said
//! so). /work/shared/conformance/releases/k8s-versions.md collects the same facts in tables.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::registry::{Registry, ResourceType};

/// A Kubernetes minor version, 1.13 … 1.35 (the server is always `v1.NN.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    minor: u32,
}

/// A version string the sim cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not of the form `1.NN` (or `v1.NN.P`).
    #[error("Kubernetes version {0:?} is not of the form 1.NN (e.g. 1.32)")]
    Syntax(String),
    /// A minor outside the supported range.
    #[error(
        "Kubernetes version {given:?} is not supported: give 1.{min} … 1.{max}",
        min = KubeVersion::MIN_MINOR,
        max = KubeVersion::MAX_MINOR
    )]
    Unsupported {
        /// What was given.
        given: String,
    },
}

/// Which aggregated discovery document (`apidiscovery.k8s.io`) a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregated {
    /// `apidiscovery.k8s.io/v2` (kubectl ≥ 1.30 asks for it first).
    V2,
    /// `apidiscovery.k8s.io/v2beta1` (kubectl 1.26 – 1.29; still second choice of newer ones).
    V2beta1,
}

impl Aggregated {
    /// The version string in the media type.
    pub fn version(self) -> &'static str {
        match self {
            Aggregated::V2 => "v2",
            Aggregated::V2beta1 => "v2beta1",
        }
    }
}

/// The era of the Service REST code that decides what an out-of-range `clusterIP` produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterIpEra {
    /// ≤ 1.19: single-stack REST, `initClusterIP`; error on `spec.clusterIP` (a string);
    /// allocation (and so the range check) skipped on dry run.
    SingleStack,
    /// 1.20 – 1.22: dual-stack REST, `allocClusterIPs` (`failed to allocated ip:…`);
    /// allocation skipped on dry run.
    DualStackRest,
    /// 1.23 – 1.32 (and later with `MultiCIDRServiceAllocator` off): `alloc.go`
    /// (`failed to allocate IP …`); dry run uses the allocator's `DryRun()`, which range-checks.
    Alloc,
    /// `MultiCIDRServiceAllocator` on (default from 1.33): a real allocation outside every
    /// ServiceCIDR is `ErrMismatchedNetwork` (no CIDR revealed); dry run still range-checks
    /// against one ServiceCIDR's allocator and names it.
    MultiCidr,
}

/// APIs turned on beyond a version's defaults, as `kube-apiserver --runtime-config` (plus the
/// feature gate the API needs) would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuntimeConfig {
    /// `networking.k8s.io/v1beta1=true` (1.31 – 1.32) or `networking.k8s.io/v1alpha1=true`
    /// (1.29 – 1.30) with `--feature-gates=MultiCIDRServiceAllocator=true`: ServiceCIDRs served
    /// at that version and Services allocated by the MultiCIDR allocator.
    pub service_cidr_beta: bool,
}

impl RuntimeConfig {
    /// Parses a `--runtime-config` value: comma-separated `group/version=true|false`. Only the
    /// ServiceCIDR group-versions (`networking.k8s.io/v1beta1`, `networking.k8s.io/v1alpha1`)
    /// are known; anything else is refused naming the key.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut rc = RuntimeConfig::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, "true"));
            let on = match value {
                "true" => true,
                "false" => false,
                other => {
                    return Err(format!(
                        "--runtime-config {part:?}: value {other:?} is not true or false"
                    ));
                }
            };
            match key {
                "networking.k8s.io/v1beta1" | "networking.k8s.io/v1alpha1" => {
                    rc.service_cidr_beta = on;
                }
                other => {
                    return Err(format!(
                        "--runtime-config {other:?} is not a group/version kube-sim can turn on: use networking.k8s.io/v1beta1=true (ServiceCIDR on 1.31–1.32) or networking.k8s.io/v1alpha1=true (1.29–1.30)"
                    ));
                }
            }
        }
        Ok(rc)
    }
}

impl Default for KubeVersion {
    /// 1.32: the kubectl dispatcher's fallback, so a sim at the default runs kubectl.1.32.
    fn default() -> Self {
        KubeVersion { minor: 32 }
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

impl FromStr for KubeVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl KubeVersion {
    /// The oldest minor served (Istio 1.4's `istioctl precheck` minimum).
    pub const MIN_MINOR: u32 = 13;
    /// The newest minor served.
    pub const MAX_MINOR: u32 = 35;

    /// `1.NN` for a supported minor.
    pub fn new(minor: u32) -> Result<Self, VersionError> {
        if (Self::MIN_MINOR..=Self::MAX_MINOR).contains(&minor) {
            Ok(KubeVersion { minor })
        } else {
            Err(VersionError::Unsupported {
                given: format!("1.{minor}"),
            })
        }
    }

    /// Parses `1.14`, `v1.14`, `1.14.3` or `v1.14.0`.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let rest = t
            .strip_prefix("1.")
            .ok_or_else(|| VersionError::Syntax(s.to_string()))?;
        let mut parts = rest.split('.');
        let minor = parts
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| VersionError::Syntax(s.to_string()))?;
        let patch_ok = match parts.next() {
            None => true,
            Some(p) => p.parse::<u32>().is_ok() && parts.next().is_none(),
        };
        if !patch_ok {
            return Err(VersionError::Syntax(s.to_string()));
        }
        Self::new(minor).map_err(|_| VersionError::Unsupported {
            given: s.to_string(),
        })
    }

    /// The minor number (`14` for 1.14).
    pub fn minor(self) -> u32 {
        self.minor
    }

    /// `v1.NN.0`, as `/version` reports it.
    pub fn git_version(self) -> String {
        format!("v1.{}.0", self.minor)
    }

    fn at_least(self, minor: u32) -> bool {
        self.minor >= minor
    }

    // ---- patches ---------------------------------------------------------------------------

    /// Server-side apply (`application/apply-patch+yaml`) is accepted by default.
    ///
    /// 1.13: no `ServerSideApply` gate at all (apiserver@kubernetes-1.13.0
    /// pkg/features/kube_features.go). 1.14–1.15: alpha, default false
    /// (apiserver@kubernetes-1.14.0 pkg/features/kube_features.go:127,
    /// apiserver@kubernetes-1.15.0 pkg/features/kube_features.go:152), and the PATCH route adds the
    /// type only when the gate is on (apiserver@kubernetes-1.14.0 pkg/endpoints/installer.go:714-720;
    /// apiext@kubernetes-1.14.0 pkg/apiserver/customresource_handler.go:233-239 for custom
    /// resources). 1.16: beta, default true (apiserver@kubernetes-1.16.0
    /// pkg/features/kube_features.go:160); GA 1.22, gate gone by 1.33.
    pub fn server_side_apply(self) -> bool {
        self.at_least(16)
    }

    /// `application/apply-patch+cbor` is accepted: only with the `CBORServingAndStorage` gate,
    /// alpha and default false from 1.32 through 1.35 (apiserver@kubernetes-1.33.0
    /// pkg/features/kube_features.go:306-308, apiserver@kubernetes-1.35.0
    /// pkg/features/kube_features.go:361-363; installer apiserver@kubernetes-1.33.0
    /// pkg/endpoints/installer.go:892-900). So never, on a default server.
    pub fn apply_cbor(self) -> bool {
        false
    }

    /// The PATCH content types a resource accepts, in the order the apiserver lists them.
    /// Built-in kinds add strategic merge patch (apiserver@kubernetes-1.14.0
    /// pkg/endpoints/installer.go:714-718); custom resources do not
    /// (apiext@kubernetes-1.14.0 pkg/apiserver/customresource_handler.go:233-236).
    pub fn patch_types(self, builtin: bool) -> Vec<&'static str> {
        let mut v = vec![
            "application/json-patch+json",
            "application/merge-patch+json",
        ];
        if builtin {
            v.push("application/strategic-merge-patch+json");
        }
        if self.server_side_apply() {
            v.push("application/apply-patch+yaml");
        }
        if self.apply_cbor() {
            v.push("application/apply-patch+cbor");
        }
        v
    }

    // ---- meta.k8s.io transformations ---------------------------------------------------

    /// `meta.k8s.io/v1` `Table`, `PartialObjectMetadata` and `PartialObjectMetadataList` are
    /// served (v1beta1 is served on every supported version).
    ///
    /// ≤1.14 only v1beta1 may be converted to (apiserver@kubernetes-1.14.0
    /// pkg/endpoints/handlers/rest.go:82-96, and 1.13.0 rest.go:80-86); 1.15 allows
    /// `gvk.GroupVersion() == metav1beta1 || == metav1` (apiserver@kubernetes-1.15.0
    /// pkg/endpoints/handlers/rest.go:102; the v1 types are new in apimachinery@kubernetes-1.15.0
    /// pkg/apis/meta/v1/types.go).
    pub fn meta_v1(self) -> bool {
        self.at_least(15)
    }

    /// The `meta.k8s.io` versions an `Accept: …;as=Table|PartialObjectMetadata[List]` may name.
    pub fn meta_versions(self) -> &'static [&'static str] {
        if self.meta_v1() {
            &["v1", "v1beta1"]
        } else {
            &["v1beta1"]
        }
    }

    // ---- discovery ------------------------------------------------------------------------

    /// The aggregated discovery formats the server answers, in no particular order (the
    /// client's `Accept` order decides; anything else falls back to the legacy documents).
    ///
    /// ≤1.25: no such endpoint. 1.26: alpha, gate `AggregatedDiscoveryEndpoint` default false
    /// (apiserver@kubernetes-1.26.0 pkg/features/kube_features.go:211). 1.27–1.29: beta, default
    /// true (apiserver@kubernetes-1.27.0 pkg/features/kube_features.go:236), only v2beta1
    /// (apiserver@kubernetes-1.27.0 pkg/endpoints/discovery/aggregated/negotiation.go:42). 1.30: v2
    /// and v2beta1 (apiserver@kubernetes-1.30.0 pkg/endpoints/discovery/aggregated/negotiation.go:40).
    /// 1.33: `AggregatedDiscoveryRemoveBetaType` default true, so only v2
    /// (apiserver@kubernetes-1.33.0 pkg/features/kube_features.go:259-262,
    /// pkg/endpoints/discovery/aggregated/negotiation.go:43-46).
    pub fn aggregated_discovery(self) -> &'static [Aggregated] {
        match self.minor {
            ..=26 => &[],
            27..=29 => &[Aggregated::V2beta1],
            30..=32 => &[Aggregated::V2, Aggregated::V2beta1],
            _ => &[Aggregated::V2],
        }
    }

    /// `/openapi/v3` is served: gate `OpenAPIV3` alpha (off) in 1.23, beta (on) from 1.24, GA
    /// 1.27 (apiserver@kubernetes-1.23.0 pkg/features/kube_features.go:232,
    /// apiserver@kubernetes-1.24.0 pkg/features/kube_features.go:208,
    /// apiserver@kubernetes-1.27.0 pkg/features/kube_features.go:264). Below, kubectl falls back
    /// to `/openapi/v2`.
    pub fn openapi_v3(self) -> bool {
        self.at_least(24)
    }

    /// The `apiextensions.k8s.io` versions CRDs are served at, preferred first.
    ///
    /// ≤1.15 only v1beta1 (apiext@kubernetes-1.15.0 pkg/apiserver/apiserver.go:149); 1.16 adds v1
    /// (apiext@kubernetes-1.16.0 pkg/apiserver/apiserver.go:151,160); both through 1.21
    /// (apiext@kubernetes-1.21.0 pkg/apiserver/apiserver.go:156,168); 1.22 stops serving v1beta1
    /// (apiext@kubernetes-1.22.0 pkg/apiserver/apiserver.go:148).
    pub fn apiextensions_versions(self) -> &'static [&'static str] {
        match self.minor {
            ..=15 => &["v1beta1"],
            16..=21 => &["v1", "v1beta1"],
            _ => &["v1"],
        }
    }

    /// `apiextensions.k8s.io/v1beta1` is served (≤ 1.21).
    pub fn apiextensions_v1beta1(self) -> bool {
        self.apiextensions_versions().contains(&"v1beta1")
    }

    /// `apiextensions.k8s.io/v1` is served (≥ 1.16).
    pub fn apiextensions_v1(self) -> bool {
        self.apiextensions_versions().contains(&"v1")
    }

    /// The `networking.k8s.io` versions `servicecidrs` is served at, preferred first.
    ///
    /// By default only from 1.33, at v1 (gate `MultiCIDRServiceAllocator` GA and default true;
    /// website MultiCIDRServiceAllocator.md @09a121e5; api@kubernetes-1.33.0 networking/v1/types.go).
    /// With the runtime-config lever: v1beta1 on 1.31–1.32 (api@kubernetes-1.31.0
    /// networking/v1beta1/types.go) and v1alpha1 on 1.29–1.30 (api@kubernetes-1.29.0
    /// networking/v1alpha1/types.go); 1.27–1.28's v1alpha1 has no ServiceCIDR type.
    pub fn service_cidr_versions(self, rc: RuntimeConfig) -> &'static [&'static str] {
        match (self.minor, rc.service_cidr_beta) {
            (33.., _) => &["v1"],
            (31..=32, true) => &["v1beta1"],
            (29..=30, true) => &["v1alpha1"],
            _ => &[],
        }
    }

    /// Services are allocated by the MultiCIDR allocator (gate `MultiCIDRServiceAllocator`):
    /// default from 1.33, opt-in with the runtime-config lever from 1.29.
    pub fn multi_cidr_allocator(self, rc: RuntimeConfig) -> bool {
        !self.service_cidr_versions(rc).is_empty()
    }

    // ---- response compression -------------------------------------------------------------
    //
    // The k8s-versions.md-style row (kept here, /work/shared is read-only):
    //
    // | version | APIResponseCompression | gzip level | what is compressed |
    // |---|---|---|---|
    // | 1.13 – 1.15 | alpha, default false | (1.14's filter: Go's default) | nothing on a default server |
    // | 1.16 – 1.25 | beta, default true | 4 | a negotiated response body > 128 KiB, to `Accept-Encoding` naming `gzip` |
    // | 1.26 – 1.35 | beta, default true | 1 | the same (1.33: a streamed list's writes are buffered up to the threshold, same outcome) |
    // | all | (no gate) | 6 (Go's default) | `/openapi/v2` ≥ 512 B (≤ 1.20) / ≥ 1400 B (≥ 1.21), kube-openapi's gziphandler |
    //
    // Sources in the functions below and in `crate::compression`.

    /// The `APIResponseCompression` feature gate's default: alpha and off through 1.15
    /// (apiserver@kubernetes-1.13.0 pkg/features/kube_features.go:105,
    /// apiserver@kubernetes-1.14.0 pkg/features/kube_features.go:124,
    /// apiserver@kubernetes-1.15.0 pkg/features/kube_features.go:148), beta and on from 1.16
    /// (apiserver@kubernetes-1.16.0 pkg/features/kube_features.go:156; the same in 1.19.0 :154,
    /// 1.22.0 :186, 1.23.0 :215, 1.28.0 :245; versioned in 1.33.0 :277-280 as `{1.8 Alpha false},
    /// {1.16 Beta true}`, unchanged in 1.35.0 :310-313). It has never gone GA, so
    /// `--feature-gates=APIResponseCompression=false` still turns it off (the lever
    /// `Server::set_response_compression(false)`).
    ///
    /// With the gate off, 1.14's installer does not wrap routes in the compression filter
    /// (apiserver@kubernetes-1.14.0 pkg/endpoints/installer.go:626-627,658-659), and from 1.16
    /// `negotiateContentEncoding` returns "" (apiserver@kubernetes-1.16.0
    /// pkg/endpoints/handlers/responsewriters/writers.go:150).
    pub fn response_compression(self) -> bool {
        self.at_least(16)
    }

    /// The gzip level of the apiserver's response writer: 4 from 1.16
    /// (apiserver@kubernetes-1.16.0 pkg/endpoints/handlers/responsewriters/writers.go:135, the
    /// same in 1.22.0 :147, 1.23.0 :147, 1.25.0 :148), 1 from 1.26 ("Reduce default gzip
    /// compression level from 4 to 1 in apiserver", apiserver commit f7e0cdae1, first tag
    /// kubernetes-1.26.0; writers.go:154 there, 1.28.0 :154, 1.33.0 :155).
    pub fn gzip_level(self) -> u32 {
        if self.at_least(26) { 1 } else { 4 }
    }

    /// The smallest `/openapi/v2` body kube-openapi's handler gzips. The handler is wrapped in
    /// `gziphandler.GzipHandler` on every supported version (kube-openapi@c59034cc13d5
    /// pkg/handler/handler.go:230 for 1.13, @b3a7cee44a30 :221 for 1.14–1.15, @743ec37842bf :221 for 1.16, @c8a335a9a2ff :141
    /// for 1.33; apiserver@kubernetes-1.33.0 pkg/server/routes/openapi.go:46 installs it). Its
    /// minimum is `DefaultMinSize`: 512 at NYTimes/gziphandler@56545f4a5d46 gzip.go:33 (the
    /// revision apiserver@kubernetes-1.15.0 go.mod pins, and kube-openapi's go.mod brings through
    /// 1.20, whose apiserver go.mod names no other), 1400 at v1.1.1 gzip.go:36 (apiserver go.mod
    /// from kubernetes-1.21.0, line 8, through 1.35.0).
    pub fn openapi_v2_gzip_min_size(self) -> usize {
        if self.at_least(21) { 1400 } else { 512 }
    }

    // ---- warnings -------------------------------------------------------------------------

    /// Every request on core/v1 `endpoints` carries a deprecation `Warning` from 1.33:
    /// `(*Endpoints).APILifecycleDeprecated()` is 1.33 (api@kubernetes-1.33.0 core/v1/lifecycle.go),
    /// the installer adds `deprecation.WarningMessage` to every route of a deprecated resource
    /// (apiserver@kubernetes-1.33.0 pkg/endpoints/installer.go:792,811), worded
    /// `%s %s is deprecated in v%d.%d+` + `; use %s %s`
    /// (apiserver@kubernetes-1.33.0 pkg/endpoints/deprecation/deprecation.go:117,129).
    pub fn endpoints_deprecated(self) -> bool {
        self.at_least(33)
    }

    /// The Endpoints deprecation warning text.
    pub const ENDPOINTS_WARNING: &'static str =
        "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice";

    // ---- defaulting -----------------------------------------------------------------------

    /// Namespaces get the label `kubernetes.io/metadata.name`: gate `NamespaceDefaultLabelName`
    /// beta (default true) in 1.21, GA 1.22 (website NamespaceDefaultLabelName.md @372dcded).
    pub fn namespace_name_label(self) -> bool {
        self.at_least(21)
    }

    /// The 403 for a create in a Terminating namespace carries the `NamespaceTerminating` cause
    /// from 1.17 (apiserver@kubernetes-1.17.0 pkg/admission/plugin/namespace/lifecycle/admission.go;
    /// 1.16.0 has only the message, apiserver@kubernetes-1.16.0 same file).
    pub fn namespace_terminating_cause(self) -> bool {
        self.at_least(17)
    }

    /// Services have `spec.clusterIPs` (the 1.20 dual-stack Service REST sets it even with the
    /// `IPv6DualStack` gate off: k/k pkg/registry/core/service/storage/rest.go, stored revision
    /// with `rest.Exporter` and `allocServiceClusterIP` "standard allocator for dualstackgate==Off",
    /// i.e. 1.20).
    pub fn service_cluster_ips(self) -> bool {
        self.at_least(20)
    }

    /// Services get `ipFamilies`/`ipFamilyPolicy` defaulted: only with `IPv6DualStack` on
    /// (`tryDefaultValidateServiceClusterIPFields`: "gate off. We don't need to validate or default
    /// new fields", same k/k rest.go revision), and that gate is alpha/off through 1.20, beta/on
    /// from 1.21 (website IPv6DualStack.md @bb78d906). So 1.21, not 1.20.
    pub fn service_ip_families(self) -> bool {
        self.at_least(21)
    }

    /// Services get `internalTrafficPolicy: Cluster`: gate `ServiceInternalTrafficPolicy` alpha
    /// (off) 1.21, beta (on) 1.22 (website ServiceInternalTrafficPolicy.md @6dccb60e).
    pub fn service_internal_traffic_policy(self) -> bool {
        self.at_least(22)
    }

    // ---- Service ClusterIP allocation ---------------------------------------------------

    /// Which Service REST code handles an explicit `clusterIP`.
    ///
    /// ≤1.19: `initClusterIP` puts `err.Error()` on `spec.clusterIP` and `ErrNotInRange` reads
    /// "provided IP is not in the valid range. The range of valid IPs is %s" (k/k PR #52693;
    /// k8s-versions.md §11). 1.20–1.22: `allocClusterIPs` in the dual-stack `rest.go` (k/k
    /// pkg/registry/core/service/storage/rest.go, the 1.20 revision above: `failed to allocated
    /// ip:%v with error:%v` on `spec.clusterIPs`). 1.23+: thockin's REST rework
    /// (`RESTAllocStuff.allocIPs`, k/k stored rest.go revision that still carries the
    /// `IPv6DualStack` gate, i.e. before its 1.25 removal: `failed to allocate IP %v: %v`), and
    /// the allocator cleanup (k/k PR #104378, Aug 2021, after 1.22's release) gives
    /// `ErrNotInRange{IP, ValidRange}` "the provided IP (%v) is not in the valid range. The range
    /// of valid IPs is %s" (k/k pkg/registry/core/service/ipallocator/interfaces.go). With
    /// `MultiCIDRServiceAllocator`, `MetaAllocator.getAllocator` returns `ErrMismatchedNetwork`
    /// (k/k pkg/registry/core/service/ipallocator/cidrallocator.go @121460de).
    pub fn cluster_ip_era(self, rc: RuntimeConfig) -> ClusterIpEra {
        match self.minor {
            _ if self.multi_cidr_allocator(rc) => ClusterIpEra::MultiCidr,
            ..=19 => ClusterIpEra::SingleStack,
            20..=22 => ClusterIpEra::DualStackRest,
            _ => ClusterIpEra::Alloc,
        }
    }

    /// A `dryRun=All` Service create checks the requested `clusterIP` against the range.
    ///
    /// ≤1.22 the REST `Create` allocates only `if !dryrun.IsDryRun(options.DryRun)` (k/k PR
    /// #67038, 1.12; the 1.20 rest.go revision above), so nothing is checked. From 1.23
    /// `allocIPs` swaps in `allocator.DryRun()` whose `Allocate` still range-checks (k/k stored
    /// rest.go `RESTAllocStuff.allocIPs`); with MultiCIDR, `MetaAllocator.DryRun()` returns one
    /// ServiceCIDR's plain allocator, whose dry-run `allocateService` returns
    /// `&ErrNotInRange{ip, a.prefix.String()}` (k/k cidrallocator.go @121460de, ipallocator.go).
    /// A dry run never checks whether the IP is already taken (same code: it returns before).
    pub fn dry_run_checks_cluster_ip(self, rc: RuntimeConfig) -> bool {
        !matches!(
            self.cluster_ip_era(rc),
            ClusterIpEra::SingleStack | ClusterIpEra::DualStackRest
        )
    }

    /// How a `[]string` field value is printed in a field error: `%#v` (`[]string{"a"}`)
    /// through 1.33 (apimachinery@kubernetes-1.33.0 pkg/util/validation/field/errors.go:112), JSON
    /// (`["a"]`) from 1.34 (apimachinery@kubernetes-1.34.0 pkg/util/validation/field/errors.go:93-96).
    pub fn render_string_list(self, items: &[&str]) -> String {
        if self.at_least(34) {
            serde_json::to_string(items).expect("strings serialise")
        } else {
            let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
            format!("[]string{{{}}}", quoted.join(", "))
        }
    }

    /// The `(field, message)` of the 422 for a requested ClusterIP outside the service range,
    /// or `None` when this request does not check it (a dry run before 1.23).
    pub fn cluster_ip_out_of_range(
        self,
        rc: RuntimeConfig,
        ip: &str,
        cidr: &str,
        dry_run: bool,
    ) -> Option<(String, String)> {
        if dry_run && !self.dry_run_checks_cluster_ip(rc) {
            return None;
        }
        let list = self.render_string_list(&[ip]);
        Some(match self.cluster_ip_era(rc) {
            ClusterIpEra::SingleStack => (
                "spec.clusterIP".into(),
                format!(
                    "Invalid value: {ip:?}: provided IP is not in the valid range. The range of valid IPs is {cidr}"
                ),
            ),
            ClusterIpEra::DualStackRest => (
                "spec.clusterIPs".into(),
                format!(
                    "Invalid value: {list}: failed to allocated ip:{ip} with error:provided IP is not in the valid range. The range of valid IPs is {cidr}"
                ),
            ),
            ClusterIpEra::MultiCidr if !dry_run => (
                "spec.clusterIPs".into(),
                format!(
                    "Invalid value: {list}: failed to allocate IP {ip}: the provided network does not match the current range"
                ),
            ),
            ClusterIpEra::Alloc | ClusterIpEra::MultiCidr => (
                "spec.clusterIPs".into(),
                format!(
                    "Invalid value: {list}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {cidr}"
                ),
            ),
        })
    }

    /// The `(field, message)` of the 422 for a requested ClusterIP another Service holds
    /// (`ErrAllocated`, "provided IP is already allocated", in every era), or `None` on a dry
    /// run (dry-run allocators return before looking: see [`Self::dry_run_checks_cluster_ip`]).
    pub fn cluster_ip_taken(
        self,
        rc: RuntimeConfig,
        ip: &str,
        dry_run: bool,
    ) -> Option<(String, String)> {
        if dry_run {
            return None;
        }
        let list = self.render_string_list(&[ip]);
        Some(match self.cluster_ip_era(rc) {
            ClusterIpEra::SingleStack => (
                "spec.clusterIP".into(),
                format!("Invalid value: {ip:?}: provided IP is already allocated"),
            ),
            ClusterIpEra::DualStackRest => (
                "spec.clusterIPs".into(),
                format!(
                    "Invalid value: {list}: failed to allocated ip:{ip} with error:provided IP is already allocated"
                ),
            ),
            ClusterIpEra::Alloc | ClusterIpEra::MultiCidr => (
                "spec.clusterIPs".into(),
                format!(
                    "Invalid value: {list}: failed to allocate IP {ip}: provided IP is already allocated"
                ),
            ),
        })
    }

    /// The `(field, message)` of the 422 for changing a Service's ClusterIP: before the
    /// dual-stack fields, `ValidateImmutableField` on `spec.clusterIP` ("field is immutable");
    /// from 1.20 `spec.clusterIPs[0]` "may not change once set".
    pub fn cluster_ip_immutable(self, new_ip: &str) -> (String, String) {
        if self.service_cluster_ips() {
            (
                "spec.clusterIPs[0]".into(),
                format!(
                    "Invalid value: {}: may not change once set",
                    self.render_string_list(&[new_ip])
                ),
            )
        } else {
            (
                "spec.clusterIP".into(),
                format!("Invalid value: {new_ip:?}: field is immutable"),
            )
        }
    }
}

/// The API a version serves, over the registry of everything the sim knows: the version-
/// dependent built-ins (`customresourcedefinitions`, `servicecidrs`) get the versions this
/// Kubernetes serves them at (possibly none); everything else is served as registered.
#[derive(Clone, Copy)]
pub struct ApiSurface<'a> {
    /// Every type the sim knows.
    pub registry: &'a Registry,
    /// The version served.
    pub version: KubeVersion,
    /// APIs turned on beyond the defaults.
    pub runtime: RuntimeConfig,
}

/// Storage key of CRDs.
pub const CRD_KEY: &str = "apiextensions.k8s.io/customresourcedefinitions";
/// Storage key of ServiceCIDRs.
pub const SERVICE_CIDR_KEY: &str = "networking.k8s.io/servicecidrs";
/// Storage key of core Endpoints.
pub const ENDPOINTS_KEY: &str = "/endpoints";

impl<'a> ApiSurface<'a> {
    /// The surface of `registry` at `version`.
    pub fn new(registry: &'a Registry, version: KubeVersion, runtime: RuntimeConfig) -> Self {
        ApiSurface {
            registry,
            version,
            runtime,
        }
    }

    /// The versions `t` is served at here, preferred first (empty: not served).
    pub fn served_versions(&self, t: &ResourceType) -> Vec<String> {
        let fixed: Option<&[&str]> = match t.key().as_str() {
            CRD_KEY => Some(self.version.apiextensions_versions()),
            SERVICE_CIDR_KEY => Some(self.version.service_cidr_versions(self.runtime)),
            _ => None,
        };
        match fixed {
            Some(vs) => vs.iter().map(|v| (*v).to_string()).collect(),
            None => t.versions.clone(),
        }
    }

    /// Every served type, with `versions` as served here.
    pub fn types(&self) -> Vec<Arc<ResourceType>> {
        self.registry
            .all()
            .filter_map(|t| {
                let vs = self.served_versions(t);
                if vs.is_empty() {
                    None
                } else if vs == t.versions {
                    Some(t.clone())
                } else {
                    let mut view = (**t).clone();
                    view.versions = vs;
                    Some(Arc::new(view))
                }
            })
            .collect()
    }

    /// The stored type (as registered: its `versions[0]` is the storage version) serving
    /// `plural` in `group`/`version` here.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let t = self.registry.get(&format!("{group}/{plural}"))?;
        self.served_versions(&t)
            .iter()
            .any(|v| v == version)
            .then_some(t)
    }

    /// Served groups with their versions (preferred first), core first, as
    /// [`Registry::groups`] orders them.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        let types = self.types();
        for (g, _) in self.registry.groups() {
            let mut vs: Vec<String> = Vec::new();
            for t in types.iter().filter(|t| t.group == g) {
                for v in &t.versions {
                    if !vs.contains(v) {
                        vs.push(v.clone());
                    }
                }
            }
            if vs.is_empty() {
                continue;
            }
            vs.sort_by(|a, b| crate::registry::compare_versions(a, b));
            out.push((g, vs));
        }
        out
    }

    /// The served types of `group`/`version`, with `versions` as served here.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types()
            .into_iter()
            .filter(|t| t.group == group && t.serves(version))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u32) -> KubeVersion {
        KubeVersion::new(minor).unwrap()
    }

    #[test]
    fn parsing_accepts_the_usual_spellings_and_refuses_the_rest() {
        assert_eq!(KubeVersion::parse("1.14").unwrap().minor(), 14);
        assert_eq!(KubeVersion::parse("v1.33.1").unwrap().minor(), 33);
        assert_eq!(KubeVersion::parse(" 1.16.0 ").unwrap().minor(), 16);
        assert_eq!(
            KubeVersion::parse("2.0"),
            Err(VersionError::Syntax("2.0".into()))
        );
        assert!(matches!(
            KubeVersion::parse("1.12"),
            Err(VersionError::Unsupported { .. })
        ));
        assert!(matches!(
            KubeVersion::parse("1.36"),
            Err(VersionError::Unsupported { .. })
        ));
        assert!(KubeVersion::parse("1.x").is_err());
        assert!(KubeVersion::parse("1.14.0.1").is_err());
        let e = KubeVersion::parse("1.99").unwrap_err().to_string();
        assert!(e.contains("1.13 … 1.35"), "{e}");
        assert_eq!(KubeVersion::default().git_version(), "v1.32.0");
        assert_eq!(v(14).to_string(), "1.14");
    }

    #[test]
    fn predicates_follow_the_release_boundaries() {
        assert!(!v(15).server_side_apply() && v(16).server_side_apply());
        assert!(!v(14).meta_v1() && v(15).meta_v1());
        assert_eq!(v(15).apiextensions_versions(), ["v1beta1"]);
        assert_eq!(v(16).apiextensions_versions(), ["v1", "v1beta1"]);
        assert!(v(21).apiextensions_v1beta1() && !v(22).apiextensions_v1beta1());
        assert!(!v(15).apiextensions_v1() && v(16).apiextensions_v1());
        assert!(v(26).aggregated_discovery().is_empty());
        assert_eq!(v(27).aggregated_discovery(), [Aggregated::V2beta1]);
        assert_eq!(v(29).aggregated_discovery(), [Aggregated::V2beta1]);
        assert!(v(30).aggregated_discovery().contains(&Aggregated::V2));
        assert!(v(32).aggregated_discovery().contains(&Aggregated::V2beta1));
        assert_eq!(v(33).aggregated_discovery(), [Aggregated::V2]);
        let off = RuntimeConfig::default();
        let on = RuntimeConfig {
            service_cidr_beta: true,
        };
        assert!(v(32).service_cidr_versions(off).is_empty());
        assert_eq!(v(32).service_cidr_versions(on), ["v1beta1"]);
        assert_eq!(v(30).service_cidr_versions(on), ["v1alpha1"]);
        assert!(v(28).service_cidr_versions(on).is_empty());
        assert_eq!(v(33).service_cidr_versions(off), ["v1"]);
        assert!(!v(32).endpoints_deprecated() && v(33).endpoints_deprecated());
        assert!(!v(20).namespace_name_label() && v(21).namespace_name_label());
        assert!(!v(20).service_ip_families() && v(21).service_ip_families());
        assert!(!v(19).service_cluster_ips() && v(20).service_cluster_ips());
        assert!(!v(23).openapi_v3() && v(24).openapi_v3());
        assert!(!v(16).namespace_terminating_cause() && v(17).namespace_terminating_cause());
        assert_eq!(
            v(14).patch_types(true),
            [
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json"
            ]
        );
        assert!(
            v(35)
                .patch_types(false)
                .contains(&"application/apply-patch+yaml")
                && !v(35)
                    .patch_types(false)
                    .contains(&"application/apply-patch+cbor")
        );
    }

    #[test]
    fn cluster_ip_errors_per_era() {
        let rc = RuntimeConfig::default();
        let cidr = "10.96.0.0/12";
        let msg = |minor, dry| {
            v(minor)
                .cluster_ip_out_of_range(rc, "1.1.1.1", cidr, dry)
                .map(|(f, m)| format!("{f}: {m}"))
        };
        assert_eq!(
            msg(19, false).unwrap(),
            "spec.clusterIP: Invalid value: \"1.1.1.1\": provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        );
        assert_eq!(
            msg(22, false).unwrap(),
            "spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocated ip:1.1.1.1 with error:provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        );
        assert_eq!(
            msg(23, false).unwrap(),
            "spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        );
        assert_eq!(
            msg(33, false).unwrap(),
            "spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocate IP 1.1.1.1: the provided network does not match the current range"
        );
        assert_eq!(
            msg(34, false).unwrap(),
            "spec.clusterIPs: Invalid value: [\"1.1.1.1\"]: failed to allocate IP 1.1.1.1: the provided network does not match the current range"
        );
        // Dry runs: nothing checked before 1.23; the range (with its CIDR) from then on.
        assert_eq!(msg(14, true), None);
        assert_eq!(msg(22, true), None);
        assert!(
            msg(23, true)
                .unwrap()
                .ends_with("valid IPs is 10.96.0.0/12")
        );
        assert!(
            msg(33, true)
                .unwrap()
                .ends_with("valid IPs is 10.96.0.0/12")
        );
        // The ServiceCIDR lever on 1.31 switches to the MultiCIDR allocator.
        let on = RuntimeConfig {
            service_cidr_beta: true,
        };
        assert_eq!(v(31).cluster_ip_era(on), ClusterIpEra::MultiCidr);
        assert_eq!(v(31).cluster_ip_era(rc), ClusterIpEra::Alloc);
        assert_eq!(v(14).cluster_ip_taken(rc, "10.96.0.9", true), None);
        assert_eq!(
            v(14).cluster_ip_immutable("10.96.0.9").0,
            "spec.clusterIP".to_string()
        );
    }

    #[test]
    fn runtime_config_parsing() {
        assert!(
            RuntimeConfig::parse("networking.k8s.io/v1beta1=true")
                .unwrap()
                .service_cidr_beta
        );
        assert!(
            !RuntimeConfig::parse("networking.k8s.io/v1beta1=false")
                .unwrap()
                .service_cidr_beta
        );
        let e = RuntimeConfig::parse("apps/v1beta1=true").unwrap_err();
        assert!(e.contains("apps/v1beta1"), "{e}");
        assert!(RuntimeConfig::parse("networking.k8s.io/v1beta1=maybe").is_err());
    }

    #[test]
    fn surface_serves_version_dependent_builtins() {
        let reg = Registry::new();
        let at = |minor| ApiSurface::new(&reg, v(minor), RuntimeConfig::default());
        assert!(
            at(14)
                .lookup(
                    "apiextensions.k8s.io",
                    "v1beta1",
                    "customresourcedefinitions"
                )
                .is_some()
        );
        assert!(
            at(14)
                .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                .is_none()
        );
        let g = at(19).groups();
        let ext = g.iter().find(|(g, _)| g == "apiextensions.k8s.io").unwrap();
        assert_eq!(ext.1, ["v1", "v1beta1"]);
        assert!(
            at(32)
                .lookup("networking.k8s.io", "v1", "servicecidrs")
                .is_none()
        );
        assert!(
            !at(32)
                .groups()
                .iter()
                .any(|(g, _)| g == "networking.k8s.io")
        );
        assert!(
            at(33)
                .lookup("networking.k8s.io", "v1", "servicecidrs")
                .is_some()
        );
        // The stored type keeps its storage version whatever version it is looked up at.
        let crd = at(14)
            .lookup(
                "apiextensions.k8s.io",
                "v1beta1",
                "customresourcedefinitions",
            )
            .unwrap();
        assert_eq!(crd.versions[0], "v1");
    }
}
