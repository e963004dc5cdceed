//! Scenarios: the objects a sim starts with (YAML as `kubectl get -o yaml` prints it) and its lever settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cidr::Cidr;
use crate::levers::{Denial, Fault};
use crate::store::State;
use crate::util::{name_of, namespace_of};

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
    /// `with_crds`/`--crds` named no known CRD set.
    #[error("unknown CRD set {0:?}: use \"modern\" or \"istio-1.4\"")]
    CrdSet(String),
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
    pub(crate) levers: crate::levers::ScenarioLevers,
    pub(crate) latency: Duration,
    pub(crate) faults: Vec<Fault>,
    pub(crate) denials: Vec<Denial>,
    pub(crate) seed: u64,
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

fn parse_stream(text: &str, origin: &str) -> Result<Vec<Value>, Error> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    flatten(docs, origin)
}

impl Scenario {
    /// A cluster with only what every cluster has.
    pub fn empty() -> Self {
        Scenario {
            objects: Vec::new(),
            crds: None,
            kube_version: crate::version::KubeVersion::default(),
            levers: crate::levers::ScenarioLevers::default(),
            latency: Duration::ZERO,
            faults: Vec::new(),
            denials: Vec::new(),
            seed: 0,
        }
    }

    /// Objects from a multi-document YAML string (`kind: List` documents are expanded).
    pub fn from_yaml(yaml: &str) -> Result<Self, Error> {
        Ok(Self::empty().with_objects(parse_stream(yaml, "inline YAML")?))
    }

    /// Objects from several YAML files, in order.
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, Error> {
        let mut objects = Vec::new();
        for p in paths {
            let p = p.as_ref();
            let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.to_path_buf(),
                source,
            })?;
            objects.extend(parse_stream(&text, &p.display().to_string())?);
        }
        Ok(Self::empty().with_objects(objects))
    }

    /// Adds objects (JSON values in `kubectl get -o json` shape).
    #[must_use]
    pub fn with_objects(mut self, objects: impl IntoIterator<Item = Value>) -> Self {
        self.objects.extend(objects);
        self
    }

    /// Adds objects from more YAML.
    pub fn with_yaml(self, yaml: &str) -> Result<Self, Error> {
        Ok(self.with_objects(parse_stream(yaml, "inline YAML")?))
    }

    /// Loads the named embedded CRD set (`modern` or `istio-1.4`) instead of detecting it.
    #[must_use]
    pub fn with_crds(mut self, set: &str) -> Self {
        self.crds = Some(set.to_string());
        self
    }

    /// The Kubernetes version served, `1.NN` (1.13 … 1.35; default 1.32): what `/version`
    /// reports and what the API does (see [`crate::version::KubeVersion`]).
    ///
    /// # Panics
    /// On a version that is not `1.NN` or not supported (a test's typo; `kube-sim serve`
    /// checks its flag first).
    #[must_use]
    pub fn with_kube_version(mut self, version: &str) -> Self {
        self.kube_version = version.parse().unwrap_or_else(|e| panic!("{e}"));
        self
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

    /// The CRD set to load: explicit, else none when the scenario brings its own CRDs, else
    /// detected from the control plane Deployment.
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
        let deployment = |n: &str| {
            self.objects.iter().any(|o| {
                o.get("kind").and_then(Value::as_str) == Some("Deployment") && name_of(o) == n
            })
        };
        Some(
            if deployment("istiod") {
                "modern"
            } else if deployment("istio-citadel") || deployment("istio-pilot") {
                "istio-1.4"
            } else {
                "modern"
            }
            .to_string(),
        )
    }

    fn service_cidr(&self) -> Result<Option<Cidr>, Error> {
        let Some(o) = self.objects.iter().find(|o| {
            o.get("kind").and_then(Value::as_str) == Some("ServiceCIDR")
                && name_of(o) == "kubernetes"
        }) else {
            return Ok(None);
        };
        let c = o
            .pointer("/spec/cidrs/0")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::Cidr("spec.cidrs is empty; give it e.g. [10.96.0.0/12]".into())
            })?;
        Cidr::parse(c).map(Some).map_err(Error::Cidr)
    }

    /// Builds the cluster state: defaults every cluster has, CRDs, then the scenario's objects.
    pub(crate) fn load(&self, api_port: u16, api_ca_pem: &str) -> Result<State, Error> {
        let given_cidr = self.service_cidr()?;
        let cidr = given_cidr.unwrap_or_default();
        let mut state = State::new(cidr);
        state.configure(self.kube_version, &self.levers);
        state.controllers.api_ca_pem = api_ca_pem.to_string();
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
        if given_cidr.is_none() {
            sys(
                &mut state,
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                       "metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.96.0.0/12"]}}),
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
        if let Some(set) = self.crd_set() {
            let crds = crate::schema::crd_set(&set).ok_or_else(|| Error::CrdSet(set.clone()))?;
            for c in crds {
                sys(&mut state, c)?;
            }
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
        crate::controllers::reconcile(&mut state);
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
