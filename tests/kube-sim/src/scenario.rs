//! Scenarios: the objects a sim starts with (YAML as `kubectl get -o yaml` prints it), the
//! Kubernetes version and Istio CRDs it serves, and its lever settings.
//!
//! A scenario file may start with a header document that makes it an overlay of another file:
//!
//! ```yaml
//! apiVersion: kube-sim.meshvm.dev/v1
//! kind: Scenario
//! base: legacy-1.4.yaml          # relative to this file; bases chain
//! kubeVersion: "1.14"            # required when there is no base; overrides the base's
//! serviceCIDR: 172.16.0.0/16     # the cluster's service range (default 10.96.0.0/12)
//! crds: istio-1.4                # CRD set (default: from the control plane's image tag)
//! istio: "1.4.2"                 # Istio release, when no image tag says it
//! delete:                        # objects of the base to drop
//! - {kind: ServiceAccount, namespace: istio-system, name: istio-egressgateway-service-account}
//! patches:                       # JSON merge patches (RFC 7386) of the base's objects
//! - kind: Service
//!   namespace: istio-system
//!   name: istio-ingressgateway
//!   patch: {status: {loadBalancer: {}}}
//! ```
//!
//! The file's other documents add objects, or replace the base's object of the same identity
//! (API group, kind, namespace, name). Loading resolves the chain: the base first, then this
//! file's `delete:`, its objects, and its `patches:`. Files without a header are plain object lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cidr::Cidr;
use crate::controllers::{Release, Timing};
use crate::levers::{Denial, Fault};
use crate::store::State;
use crate::util::{name_of, namespace_of};

/// `apiVersion` of a scenario header document.
pub const HEADER_API_VERSION: &str = "kube-sim.meshvm.dev/v1";

/// Errors building a scenario or loading it into a sim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scenario file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A scenario is not YAML of Kubernetes objects.
    #[error("{origin}: not a YAML stream of Kubernetes objects: {message}")]
    Yaml {
        /// File name or `inline YAML`.
        origin: String,
        /// Parser message.
        message: String,
    },
    /// A scenario header (overlay) is wrong: unknown field, missing base object, cycle, …
    #[error("{origin}: {message}")]
    Overlay {
        /// File name or `inline YAML`.
        origin: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// An object cannot be loaded (unknown kind, invalid, …).
    #[error("scenario object {kind} {name:?}: {message}")]
    Object {
        /// Kind of the object.
        kind: String,
        /// `namespace/name` of the object.
        name: String,
        /// Why; names what to fix.
        message: String,
    },
    /// `with_crds`/`--crds`/`crds:` named no known CRD set.
    #[error("unknown CRD set {0:?}: use one of {sets}", sets = crate::schema::CRD_SETS.join(", "))]
    CrdSet(String),
    /// apiextensions.k8s.io/v1beta1 CRDs on a Kubernetes that no longer serves them.
    #[error(
        "{what} is apiextensions.k8s.io/v1beta1, which Kubernetes 1.22 and later do not serve (the API was removed in 1.22), and this scenario runs Kubernetes 1.{minor}: run it with --kube-version 1.21 or lower, or use an Istio release whose CRDs are apiextensions.k8s.io/v1 (1.12 or later)"
    )]
    CrdVersion {
        /// The CRD set or object.
        what: String,
        /// The Kubernetes minor version asked for.
        minor: u32,
    },
    /// The service CIDR of the scenario is unusable.
    #[error("scenario ServiceCIDR \"kubernetes\": {0}")]
    Cidr(String),
    /// The server could not start.
    #[error("cannot start kube-sim: {0}")]
    Start(String),
}

/// What a sim starts with.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub(crate) objects: Vec<Value>,
    pub(crate) crds: Option<String>,
    pub(crate) kube_version: crate::version::KubeVersion,
    kube_pinned: bool,
    kube_declared: bool,
    istio: Option<String>,
    service_cidr: Option<String>,
    pub(crate) levers: crate::levers::ScenarioLevers,
    pub(crate) latency: Duration,
    pub(crate) faults: Vec<Fault>,
    pub(crate) denials: Vec<Denial>,
    pub(crate) seed: u64,
    pub(crate) timing: Timing,
    /// Scenario files applied so far (canonical paths), so an overlay whose base was already
    /// given is not applied twice.
    loaded: BTreeSet<PathBuf>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::empty()
    }
}

fn flatten(docs: Vec<Value>, origin: &str) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            Value::Object(_)
                if d.get("kind").and_then(Value::as_str) == Some("List")
                    || d.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List"))
                        && d.get("items").is_some() =>
            {
                let items = d
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                out.extend(flatten(items, origin)?);
            }
            Value::Object(_) => {
                if d.get("kind")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                    || d.get("apiVersion")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    return Err(Error::Yaml {
                        origin: origin.to_string(),
                        message: format!(
                            "an object lacks apiVersion or kind (name {:?})",
                            name_of(&d)
                        ),
                    });
                }
                out.push(d);
            }
            other => {
                return Err(Error::Yaml {
                    origin: origin.to_string(),
                    message: format!("expected an object, found {other}"),
                });
            }
        }
    }
    Ok(out)
}

fn parse_docs(text: &str, origin: &str) -> Result<Vec<Value>, Error> {
    serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml {
        origin: origin.to_string(),
        message: e.to_string(),
    })
}

fn is_header(doc: &Value) -> bool {
    doc.get("apiVersion").and_then(Value::as_str) == Some(HEADER_API_VERSION)
        && doc.get("kind").and_then(Value::as_str) == Some("Scenario")
}

/// An object's identity in a scenario: API group (not version), kind, namespace, name.
pub fn identity(obj: &Value) -> (String, String, String, String) {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    (
        group.to_string(),
        obj.get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        namespace_of(obj).to_string(),
        name_of(obj).to_string(),
    )
}

/// The scenario header of a file: overlay base, declared versions, patches and deletions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// The base scenario file, relative to the overlay.
    pub base: Option<String>,
    /// The Kubernetes version (`1.NN`) the scenario declares.
    pub kube_version: Option<String>,
    /// The service range.
    pub service_cidr: Option<String>,
    /// The CRD set.
    pub crds: Option<String>,
    /// The Istio release.
    pub istio: Option<String>,
    /// Patches of the base's objects.
    pub patches: Vec<Patch>,
    /// Objects to drop.
    pub delete: Vec<Selector>,
}

/// One `patches:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// The object patched.
    pub selector: Selector,
    /// The patch.
    pub patch: Value,
    /// `type: strategic`: a strategic merge patch as `kubectl patch` sends for built-in kinds
    /// (lists such as `containers` and `env` merge by name); default `merge`, a JSON merge patch.
    pub strategic: bool,
}

/// Which object a `patches:` or `delete:` entry means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// `apiVersion` (optional: any version of the kind).
    pub api_version: Option<String>,
    /// Kind.
    pub kind: String,
    /// Namespace ("" for cluster-scoped objects, or objects given without one).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Selector {
    fn parse(v: &Value, what: &str, allowed: &[&str]) -> Result<Selector, String> {
        let m = v
            .as_object()
            .ok_or_else(|| format!("each {what} entry is a mapping with kind, namespace, name"))?;
        if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{what} entry has unknown field {k:?} (allowed: {})",
                allowed.join(", ")
            ));
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Selector {
            api_version: text("apiVersion"),
            kind: text("kind").ok_or_else(|| format!("a {what} entry has no kind"))?,
            namespace: text("namespace").unwrap_or_default(),
            name: text("name").ok_or_else(|| format!("a {what} entry has no name"))?,
        })
    }

    /// Whether `obj` is the object this selects.
    pub fn matches(&self, obj: &Value) -> bool {
        obj.get("kind").and_then(Value::as_str) == Some(self.kind.as_str())
            && name_of(obj) == self.name
            && namespace_of(obj) == self.namespace
            && self.api_version.as_deref().is_none_or(|a| {
                let have = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
                // A group alone (`networking.istio.io`) matches any of its versions.
                have == a || have.rsplit_once('/').is_some_and(|(g, _)| g == a)
            })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Header {
    /// Reads a header document; unknown fields are refused.
    pub fn parse(doc: &Value) -> Result<Header, String> {
        const FIELDS: &[&str] = &[
            "apiVersion",
            "kind",
            "metadata",
            "base",
            "kubeVersion",
            "serviceCIDR",
            "crds",
            "istio",
            "patches",
            "delete",
        ];
        let m = doc.as_object().ok_or("the header is not a mapping")?;
        if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "scenario header has unknown field {k:?} (allowed: {})",
                FIELDS[2..].join(", ")
            ));
        }
        let text = |k: &str| -> Result<Option<String>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err(format!(
                    "scenario header field {k} must be a string, not {other}"
                )),
            }
        };
        let mut h = Header {
            base: text("base")?,
            kube_version: text("kubeVersion")?,
            service_cidr: text("serviceCIDR")?,
            crds: text("crds")?,
            istio: text("istio")?,
            ..Header::default()
        };
        if let Some(v) = &h.kube_version
            && v.parse::<crate::version::KubeVersion>().is_err()
        {
            return Err(format!(
                "kubeVersion {v:?} is not of the form 1.NN (quote it: kubeVersion: \"1.14\")"
            ));
        }
        let list = |k: &str| -> Result<Vec<Value>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(format!("scenario header field {k} must be a list")),
            }
        };
        for p in list("patches")? {
            let selector = Selector::parse(
                &p,
                "patches",
                &["apiVersion", "kind", "namespace", "name", "patch", "type"],
            )?;
            let patch = p
                .get("patch")
                .filter(|v| v.is_object())
                .cloned()
                .ok_or_else(|| format!("patches entry for {selector} has no patch mapping"))?;
            let strategic = match p.get("type").and_then(Value::as_str) {
                None | Some("merge") => false,
                Some("strategic") => true,
                Some(other) => {
                    return Err(format!(
                        "patches entry for {selector}: type {other:?} is not merge or strategic"
                    ));
                }
            };
            h.patches.push(Patch {
                selector,
                patch,
                strategic,
            });
        }
        for d in list("delete")? {
            h.delete.push(Selector::parse(
                &d,
                "delete",
                &["apiVersion", "kind", "namespace", "name"],
            )?);
        }
        Ok(h)
    }
}

impl Scenario {
    /// A cluster with only what every cluster has.
    pub fn empty() -> Self {
        Scenario {
            objects: Vec::new(),
            crds: None,
            kube_version: crate::version::KubeVersion::default(),
            kube_pinned: false,
            kube_declared: false,
            istio: None,
            service_cidr: None,
            levers: crate::levers::ScenarioLevers::default(),
            latency: Duration::ZERO,
            faults: Vec::new(),
            denials: Vec::new(),
            seed: 0,
            timing: Timing::default(),
            loaded: BTreeSet::new(),
        }
    }

    /// A scenario from a multi-document YAML string (`kind: List` documents are expanded; a
    /// header's `base:` is relative to the current directory).
    pub fn from_yaml(yaml: &str) -> Result<Self, Error> {
        let mut s = Self::empty();
        s.apply_text(yaml, "inline YAML", Path::new("."), &mut Vec::new())?;
        s.settle();
        Ok(s)
    }

    /// A scenario from one file (an overlay brings its base chain).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_files(&[path.as_ref()])
    }

    /// A scenario from several files, in order; overlays bring their bases (once each).
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, Error> {
        let mut s = Self::empty();
        for p in paths {
            s.apply_file(p.as_ref(), &mut Vec::new())?;
        }
        s.settle();
        Ok(s)
    }

    /// Scenario `path` (an overlay brings its base first) on top of this one.
    pub fn with_file(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        self.apply_file(path.as_ref(), &mut Vec::new())?;
        self.settle();
        Ok(self)
    }

    fn apply_file(&mut self, path: &Path, chain: &mut Vec<PathBuf>) -> Result<(), Error> {
        let read_err = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let canonical = path.canonicalize().map_err(read_err)?;
        let origin = path.display().to_string();
        if chain.contains(&canonical) {
            return Err(Error::Overlay {
                origin,
                message: format!(
                    "base chain loops: {}",
                    chain
                        .iter()
                        .chain(std::iter::once(&canonical))
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" -> ")
                ),
            });
        }
        if self.loaded.contains(&canonical) {
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let dir = canonical.parent().unwrap_or(Path::new(".")).to_path_buf();
        chain.push(canonical.clone());
        self.apply_text(&text, &origin, &dir, chain)?;
        chain.pop();
        self.loaded.insert(canonical);
        Ok(())
    }

    fn apply_text(
        &mut self,
        text: &str,
        origin: &str,
        dir: &Path,
        chain: &mut Vec<PathBuf>,
    ) -> Result<(), Error> {
        let overlay = |message: String| Error::Overlay {
            origin: origin.to_string(),
            message,
        };
        let mut docs = parse_docs(text, origin)?;
        docs.retain(|d| !d.is_null());
        let header = match docs.first() {
            Some(d) if is_header(d) => Some(Header::parse(&docs.remove(0)).map_err(overlay)?),
            _ => None,
        };
        if docs.iter().any(is_header) {
            return Err(overlay(
                "a Scenario header may only be the first document".into(),
            ));
        }
        let objects = flatten(docs, origin)?;
        let Some(h) = header else {
            self.put_objects(objects);
            return Ok(());
        };
        match &h.base {
            Some(base) => self.apply_file(&dir.join(base), chain)?,
            // Without a base, a header on an empty scenario starts one: it declares its version.
            // (On top of objects already given — `with_yaml` — it is an overlay of them.)
            None if h.kube_version.is_none() && self.objects.is_empty() && !self.kube_declared => {
                return Err(overlay(
                    "a base scenario (no `base:`) declares its Kubernetes version: add e.g. kubeVersion: \"1.32\" to its header".into(),
                ));
            }
            None => {}
        }
        if let Some(v) = &h.kube_version
            && !self.kube_pinned
        {
            self.kube_version = v.parse().map_err(|e: crate::version::VersionError| {
                overlay(format!("kubeVersion {v:?}: {e}"))
            })?;
            self.kube_declared = true;
        }
        if h.service_cidr.is_some() {
            self.service_cidr.clone_from(&h.service_cidr);
        }
        if let Some(c) = &h.crds {
            if !crate::schema::CRD_SETS.contains(&c.as_str()) {
                return Err(Error::CrdSet(c.clone()));
            }
            self.crds = Some(c.clone());
        }
        if h.istio.is_some() {
            self.istio.clone_from(&h.istio);
        }
        for sel in &h.delete {
            let before = self.objects.len();
            self.objects.retain(|o| !sel.matches(o));
            if self.objects.len() == before {
                return Err(overlay(format!(
                    "delete: {sel} is not in the base: remove the entry or fix its kind, namespace and name"
                )));
            }
        }
        self.put_objects(objects);
        for p in &h.patches {
            let sel = &p.selector;
            let target = self
                .objects
                .iter_mut()
                .find(|o| sel.matches(o))
                .ok_or_else(|| {
                    overlay(format!(
                        "patches: {sel} is not in the base: fix its kind, namespace and name"
                    ))
                })?;
            if p.strategic {
                crate::patch::strategic_merge_patch(target, &p.patch)
                    .map_err(|e| overlay(format!("patches: {sel}: {e}")))?;
            } else {
                crate::patch::merge_patch(target, &p.patch);
            }
        }
        Ok(())
    }

    /// Adds objects, each replacing the one of the same identity.
    fn put_objects(&mut self, objects: Vec<Value>) {
        for o in objects {
            let id = identity(&o);
            match self.objects.iter_mut().find(|x| identity(x) == id) {
                Some(slot) => *slot = o,
                None => self.objects.push(o),
            }
        }
    }

    /// Adds objects (JSON values in `kubectl get -o json` shape).
    #[must_use]
    pub fn with_objects(mut self, objects: impl IntoIterator<Item = Value>) -> Self {
        self.objects.extend(objects);
        self.settle();
        self
    }

    /// Without a declared or pinned version, the default follows the CRD set: Kubernetes 1.21
    /// (the last that serves apiextensions v1beta1) for Istio 1.4 and 1.8, else 1.32.
    fn settle(&mut self) {
        if self.kube_pinned || self.kube_declared {
            return;
        }
        let v1beta1 = self
            .crd_set()
            .is_some_and(|s| crate::schema::crd_set_is_v1beta1(&s));
        self.kube_version = crate::version::KubeVersion::new(if v1beta1 { 21 } else { 32 })
            .expect("1.21 and 1.32 are supported versions");
    }

    /// Adds objects (or an overlay, with a header) from more YAML.
    pub fn with_yaml(mut self, yaml: &str) -> Result<Self, Error> {
        self.apply_text(yaml, "inline YAML", Path::new("."), &mut Vec::new())?;
        self.settle();
        Ok(self)
    }

    /// Loads the named embedded CRD set (see [`crate::schema::CRD_SETS`]) instead of detecting it.
    #[must_use]
    pub fn with_crds(mut self, set: &str) -> Self {
        self.crds = Some(set.to_string());
        self.settle();
        self
    }

    /// The Kubernetes version served, `1.NN` (1.13 … 1.35): what `/version` reports and what the
    /// API does (see [`crate::version::KubeVersion`]). Overrides what the scenario declares
    /// (default: the scenario's `kubeVersion`, else 1.32).
    ///
    /// # Panics
    /// On a version that is not `1.NN` or not supported (a test's typo; `kube-sim serve`
    /// checks its flag first).
    #[must_use]
    pub fn with_kube_version(mut self, version: &str) -> Self {
        self.kube_version = version.parse().unwrap_or_else(|e| panic!("{e}"));
        self.kube_pinned = true;
        self
    }

    /// The Kubernetes version served, `1.NN`.
    pub fn kube_version(&self) -> String {
        self.kube_version.to_string()
    }

    /// Whether the version came from the scenario's header (not the default, not pinned).
    pub fn kube_version_declared(&self) -> bool {
        self.kube_declared && !self.kube_pinned
    }

    /// How long Citadel's informers take from an event to its write (default 300 ms; zero: at once).
    #[must_use]
    pub fn with_citadel_issue_delay(mut self, delay: Duration) -> Self {
        self.timing.issue_delay = delay;
        self
    }

    /// How long a Deployment rollout takes (default 300 ms).
    #[must_use]
    pub fn with_rollout_delay(mut self, delay: Duration) -> Self {
        self.timing.rollout_delay = delay;
        self
    }

    /// Citadel's Secret resync period, when it rotates outdated `istio.<sa>` (default 1 s).
    #[must_use]
    pub fn with_citadel_resync(mut self, period: Duration) -> Self {
        self.timing.resync = period;
        self
    }

    /// The controllers' timing levers.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The Istio release: the header's `istio:`, else the control plane image's tag
    /// (`istiod`, else `istio-citadel`/`istio-pilot`), else `None`.
    pub fn istio_release(&self) -> Option<Release> {
        if let Some(r) = self.istio.as_deref().and_then(Release::parse) {
            return Some(r);
        }
        ["istiod", "istio-citadel", "istio-pilot"]
            .iter()
            .find_map(|name| {
                self.objects.iter().find(|o| {
                    o.get("kind").and_then(Value::as_str) == Some("Deployment")
                        && name_of(o) == *name
                })
            })
            .and_then(|d| d.pointer("/spec/template/spec/containers/0/image"))
            .and_then(Value::as_str)
            .and_then(Release::from_image)
    }

    /// Added latency per request.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Adds a fault rule.
    #[must_use]
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Seed of the fault RNG.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Denies `verb` on `resource` (in `namespace`, or everywhere) with a 403.
    #[must_use]
    pub fn with_denial(mut self, verb: &str, resource: &str, namespace: Option<&str>) -> Self {
        self.denials.push(Denial {
            verb: verb.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
        });
        self
    }

    /// The objects, as given.
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    /// The CRD set to load: explicit (`with_crds`, header `crds:`), else none when the scenario
    /// brings its own CRDs, else the set of the Istio release (header `istio:`, or the control
    /// plane Deployment's image tag; `istio-citadel`/`istio-pilot` without a tag: Istio 1.4),
    /// else `modern`.
    pub fn crd_set(&self) -> Option<String> {
        if let Some(s) = &self.crds {
            return Some(s.clone());
        }
        if self
            .objects
            .iter()
            .any(|o| o.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        {
            return None;
        }
        if let Some(r) = self.istio_release() {
            return Some(crate::schema::crd_set_for_release(r).to_string());
        }
        let deployment = |n: &str| {
            self.objects.iter().any(|o| {
                o.get("kind").and_then(Value::as_str) == Some("Deployment") && name_of(o) == n
            })
        };
        Some(
            if !deployment("istiod") && (deployment("istio-citadel") || deployment("istio-pilot")) {
                "istio-1.4"
            } else {
                "modern"
            }
            .to_string(),
        )
    }

    /// The service range: the `kubernetes` ServiceCIDR object, else the header's `serviceCIDR`.
    fn service_cidr(&self) -> Result<Option<Cidr>, Error> {
        let Some(o) = self.objects.iter().find(|o| {
            o.get("kind").and_then(Value::as_str) == Some("ServiceCIDR")
                && name_of(o) == "kubernetes"
        }) else {
            return self
                .service_cidr
                .as_deref()
                .map(|c| Cidr::parse(c).map_err(Error::Cidr))
                .transpose();
        };
        let c = o
            .pointer("/spec/cidrs/0")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::Cidr("spec.cidrs is empty; give it e.g. [10.96.0.0/12]".into())
            })?;
        Cidr::parse(c).map(Some).map_err(Error::Cidr)
    }

    /// Refuses apiextensions.k8s.io/v1beta1 CRDs (the set's or the scenario's own) on
    /// Kubernetes 1.22 and later, which no longer serve that API (k8s-versions.md §3).
    fn check_crd_versions(&self, set: Option<&[Value]>, set_name: &str) -> Result<(), Error> {
        let minor = self.kube_version.minor();
        if minor < 22 {
            return Ok(());
        }
        let v1beta1 = |o: &Value| {
            o.get("apiVersion").and_then(Value::as_str) == Some("apiextensions.k8s.io/v1beta1")
        };
        if set.is_some_and(|crds| crds.iter().any(v1beta1)) {
            return Err(Error::CrdVersion {
                what: format!("CRD set {set_name:?} (Istio's CustomResourceDefinitions)"),
                minor,
            });
        }
        if let Some(o) = self.objects.iter().find(|o| {
            o.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") && v1beta1(o)
        }) {
            return Err(Error::CrdVersion {
                what: format!("CustomResourceDefinition {:?}", name_of(o)),
                minor,
            });
        }
        Ok(())
    }

    /// Builds the cluster state: defaults every cluster has, CRDs, then the scenario's objects.
    pub(crate) fn load(&self, api_port: u16, api_ca_pem: &str) -> Result<State, Error> {
        let set = self.crd_set();
        let crds = match &set {
            Some(name) => {
                Some(crate::schema::crd_set(name).ok_or_else(|| Error::CrdSet(name.clone()))?)
            }
            None => None,
        };
        self.check_crd_versions(crds.as_deref(), set.as_deref().unwrap_or(""))?;
        let given_cidr = self.service_cidr()?;
        let cidr = given_cidr.unwrap_or_default();
        let mut state = State::new(cidr);
        state.configure(self.kube_version, &self.levers);
        state.controllers.api_ca_pem = api_ca_pem.to_string();
        state.controllers.kube_minor = self.kube_version.minor();
        state.controllers.timing = self.timing;
        let sys = |state: &mut State, o: Value| {
            let what = (
                o["kind"].as_str().unwrap_or("").to_string(),
                name_of(&o).to_string(),
            );
            state.upsert(o).map_err(|message| Error::Object {
                kind: what.0,
                name: what.1,
                message,
            })
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            sys(
                &mut state,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?;
        }
        // The bootstrap RBAC policy kube-apiserver reconciles at start (see `crate::rbac`).
        for o in crate::rbac::bootstrap_objects() {
            sys(&mut state, o)?;
        }
        let has_object = self.objects.iter().any(|o| {
            o.get("kind").and_then(Value::as_str) == Some("ServiceCIDR")
                && name_of(o) == "kubernetes"
        });
        if !has_object {
            // What the apiserver's --service-cluster-ip-range makes (the header's serviceCIDR,
            // else the kubeadm default); whether the API serves it is the version's business.
            sys(
                &mut state,
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                       "metadata": {"name": "kubernetes"},
                       "spec": {"cidrs": [self.service_cidr.as_deref().unwrap_or("10.96.0.0/12")]}}),
            )?;
        }
        let api_ip = cidr.nth(1).map(|a| a.to_string()).unwrap_or_default();
        sys(
            &mut state,
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "kubernetes", "namespace": "default",
                                "labels": {"component": "apiserver", "provider": "kubernetes"}},
                   "spec": {"clusterIP": api_ip, "type": "ClusterIP",
                            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}]}}),
        )?;
        sys(
            &mut state,
            json!({"apiVersion": "v1", "kind": "Endpoints",
                   "metadata": {"name": "kubernetes", "namespace": "default",
                                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                   "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                                "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}]}),
        )?;
        for c in crds.into_iter().flatten() {
            sys(&mut state, c)?;
        }
        // Namespaces and CRDs first, so the rest can land in them.
        let rank = |o: &Value| match o.get("kind").and_then(Value::as_str) {
            Some("Namespace") => 0,
            Some("CustomResourceDefinition") => 1,
            _ => 2,
        };
        let mut ordered: Vec<&Value> = self.objects.iter().collect();
        ordered.sort_by_key(|o| rank(o));
        for o in ordered {
            let mut o = o.clone();
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let ns = namespace_of(&o).to_string();
            let kind = o["kind"].as_str().unwrap_or("").to_string();
            let namespaced = state
                .registry
                .by_kind(o["apiVersion"].as_str().unwrap_or(""), &kind)
                .is_some_and(|t| t.namespaced);
            if namespaced && !ns.is_empty() && state.get_obj("/namespaces", "", &ns).is_none() {
                // Dumps of one namespace often omit the Namespace itself.
                sys(
                    &mut state,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )?;
            }
            let label = if ns.is_empty() {
                name_of(&o).to_string()
            } else {
                format!("{ns}/{}", name_of(&o))
            };
            state.upsert(o).map_err(|message| Error::Object {
                kind,
                name: label,
                message,
            })?;
        }
        // The cluster was running before the sim started: controllers catch up at once.
        state.controllers.loading = true;
        crate::controllers::reconcile(&mut state);
        state.controllers.loading = false;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_flattened_and_crd_set_detected() {
        let s = Scenario::from_yaml(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: istio-citadel, namespace: istio-system}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        )
        .unwrap();
        assert_eq!(s.objects().len(), 2);
        assert_eq!(s.crd_set().as_deref(), Some("istio-1.4"));
        assert_eq!(Scenario::empty().crd_set().as_deref(), Some("modern"));
        assert_eq!(
            Scenario::empty()
                .with_crds("istio-1.4")
                .crd_set()
                .as_deref(),
            Some("istio-1.4")
        );
    }

    #[test]
    fn overlays_replace_by_identity_and_patch() {
        let base = "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nkubeVersion: \"1.28\"\n---\n\
            apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\n\
            spec: {template: {spec: {containers: [{name: discovery, image: pilot:1.22.0, args: [a]}, {name: side, image: s}]}}}\n---\n\
            apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: istio-system}\nspec: {selector: {a: b}}\n";
        let s = Scenario::from_yaml(base).unwrap().with_yaml(
            "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\npatches:\n\
             - {kind: Deployment, namespace: istio-system, name: istiod, type: strategic,\n\
             \x20  patch: {spec: {template: {spec: {containers: [{name: discovery, image: pilot:1.8.0}]}}}}}\n\
             - {kind: Gateway, apiVersion: networking.istio.io, namespace: istio-system, name: g, patch: {metadata: {labels: {x: z}}}}\n---\n\
             apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: g, namespace: istio-system}\nspec: {selector: {c: d}}\n",
        ).unwrap();
        assert_eq!(
            s.objects().len(),
            2,
            "the Gateway is replaced by identity, whatever its version"
        );
        let d = &s.objects()[0];
        // Strategic: the container merged by name, its other fields and the sidecar kept.
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "discovery", "image": "pilot:1.8.0", "args": ["a"]}, {"name": "side", "image": "s"}])
        );
        let g = &s.objects()[1];
        assert_eq!(g["apiVersion"], "networking.istio.io/v1beta1");
        assert_eq!(g["spec"], json!({"selector": {"c": "d"}}));
        assert_eq!(
            g["metadata"]["labels"],
            json!({"x": "z"}),
            "patches come after the objects"
        );
        assert_eq!(s.kube_version(), "1.28");
        assert_eq!(s.istio_release(), Some(Release(1, 8)));
        assert_eq!(s.crd_set().as_deref(), Some("istio-1.8"));
    }

    #[test]
    fn objects_without_kind_are_refused() {
        let e = Scenario::from_yaml("metadata: {name: x}\n").unwrap_err();
        assert!(e.to_string().contains("lacks apiVersion or kind"), "{e}");
    }

    #[test]
    fn kube_version_parsing() {
        assert_eq!(
            Scenario::empty()
                .with_kube_version("1.27")
                .kube_version
                .minor(),
            27
        );
    }
}
