//! Emulated controllers, as the real ones behave per release:
//! - the deployment controller: a template change rolls out after a delay (`kubectl rollout
//!   status` waits for it), and only then do the new pods run;
//! - Citadel (Istio 1.4): loads its CA when its pods start and keeps it until the next restart;
//!   issues `istio.<sa>` Secrets asynchronously from its informers, never overwrites them, rotates
//!   them on its resync when their root is not the loaded one or they near expiry;
//! - istiod: writes `istio-ca-root-cert` per namespace with its release's namespace rules, and
//!   loads its CA at start too;
//! - kube-controller-manager's share: ServiceAccount `default` and `kube-root-ca.crt` per namespace.
//!
//! Work happens in [`reconcile`], which the store runs after every write and the server's
//! background tick ([`drive`]) runs when timed work is due.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::ca::{SimCa, Workload};
use crate::store::State;
use crate::util::name_of;

/// The trust domain both eras default to.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// How often the background tick looks for due work.
pub const TICK: Duration = Duration::from_millis(20);

/// Istio's `istio.io/key-and-cert` Secret type (istio/istio@1.4.2
/// security/pkg/k8s/controller/workloadsecret.go:44).
pub const ISTIO_SECRET_TYPE: &str = "istio.io/key-and-cert";

/// Timing levers of the emulated controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From a ServiceAccount (or Secret, or Namespace) event to Citadel's write: its informer's
    /// latency. `0` writes at once.
    pub issue_delay: Duration,
    /// From a Deployment's generation bump to its rollout being complete (new pods ready).
    pub rollout_delay: Duration,
    /// Citadel's Secret informer resync, when it re-checks every `istio.<sa>` for rotation
    /// (one minute in Citadel, workloadsecret.go:65).
    pub resync: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            issue_delay: Duration::from_millis(300),
            rollout_delay: Duration::from_millis(300),
            resync: Duration::from_secs(1),
        }
    }
}

/// State of the emulated controllers.
#[derive(Default)]
pub struct Controllers {
    /// The API server's CA, which `kube-root-ca.crt` publishes.
    pub api_ca_pem: String,
    /// Kubernetes minor version of the cluster (`0`: unknown, treated as current).
    pub kube_minor: u32,
    /// Timing levers.
    pub timing: Timing,
    /// Set while the scenario loads: the cluster is already running, so queued work is done now.
    pub loading: bool,
    jobs: Vec<(Instant, Job)>,
    deployments: BTreeMap<(String, String), Rollout>,
    citadel: Option<Citadel>,
    istiod: Option<Istiod>,
}

/// A Deployment as its running pods are: the template and replicas of the last complete rollout.
#[derive(Debug, Clone)]
struct Rollout {
    generation: i64,
    template: Value,
    replicas: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Job {
    /// The deployment controller finishes the rollout of a Deployment.
    Rollout {
        ns: String,
        name: String,
    },
    /// Citadel's handlers (workloadsecret.go), each delayed by the informer.
    Upsert {
        ns: String,
        sa: String,
    },
    DeleteSecret {
        ns: String,
        name: String,
    },
    Recreate {
        ns: String,
        sa: String,
    },
    Check {
        ns: String,
        name: String,
    },
    Retroactive {
        ns: String,
    },
}

/// One running Citadel: the CA it loaded at start, and what its informers have seen.
struct Citadel {
    /// The Deployment's namespace.
    deployment_ns: String,
    /// `--citadel-storage-namespace` (istio-ca-secret, and the `ca.istio.io/env` value it owns).
    storage_ns: String,
    ca: Arc<SimCa>,
    trust_domain: String,
    enable_by_default: bool,
    pkcs8: bool,
    /// ServiceAccount name → (service, namespace) for webhooks; `sa.ns` → custom DNS names.
    webhooks: BTreeMap<String, (String, String)>,
    custom_dns: BTreeMap<String, Vec<String>>,
    known_sas: BTreeSet<(String, String)>,
    /// `istio.io/key-and-cert` Secrets seen: resourceVersion and the annotated ServiceAccount.
    known_secrets: BTreeMap<(String, String), (String, String)>,
    managed: BTreeMap<String, bool>,
    next_resync: Instant,
    /// How many identities each ServiceAccount got, so a re-issue draws another pool key.
    issued: BTreeMap<(String, String), usize>,
    /// Per secret: the resourceVersion seen and when its certificate enters the grace period.
    rotation: BTreeMap<(String, String), (String, i64)>,
}

/// One running istiod.
struct Istiod {
    ns: String,
    release: Release,
    ca: Arc<SimCa>,
    /// Fingerprint of `cacerts` when the CA came from it (plugged-in mode).
    plugged: Option<String>,
    /// Whether the cacerts file watcher runs (reloads a new intermediate under the same root).
    auto_reload: bool,
    /// Whether `discoverySelectors` restrict the root certificate ConfigMaps.
    enhanced_scoping: bool,
}

/// An Istio `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u32, pub u32);

impl Release {
    /// The newest release the sim models (the "current" scenario).
    pub const CURRENT: Release = Release(1, 24);

    /// The release of an image reference (`docker.io/istio/pilot:1.22.0`, `…:1.22.0-distroless`,
    /// `…:1.8`); `None` when the tag is not a version (`latest`, none, a digest).
    pub fn from_image(image: &str) -> Option<Release> {
        let last = image.rsplit('/').next().unwrap_or(image);
        let last = last.split('@').next().unwrap_or(last);
        let (_, tag) = last.split_once(':')?;
        Release::parse(tag)
    }

    /// `1.22`, `1.22.0`, `v1.22.3-distroless`.
    pub fn parse(text: &str) -> Option<Release> {
        let t = text.trim().trim_start_matches('v');
        let mut parts = t.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Release(major, minor))
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Controllers {
    /// When the next timed work is due (a job, or Citadel's resync).
    pub fn next_due(&self) -> Option<Instant> {
        let job = self.jobs.iter().map(|(at, _)| *at).min();
        let resync = self.citadel.as_ref().map(|c| c.next_resync);
        match (job, resync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The root certificate PEM the running Citadel signs with, if Citadel runs.
    pub fn citadel_root(&self) -> Option<String> {
        self.citadel.as_ref().map(|c| c.ca.root_pem())
    }

    /// The root certificate PEM the running istiod signs with, if istiod runs.
    pub fn istiod_root(&self) -> Option<String> {
        self.istiod.as_ref().map(|c| c.ca.root_pem())
    }

    fn schedule(&mut self, delay: Duration, now: Instant, job: Job) {
        if self.jobs.iter().any(|(_, j)| *j == job) {
            return;
        }
        let at = if self.loading { now } else { now + delay };
        self.jobs.push((at, job));
    }
}

/// Runs the controllers until the state is dropped: every [`TICK`], when work is due, takes the
/// write lock and reconciles. Cheap when idle (one read lock per tick).
pub async fn drive(state: &RwLock<State>) {
    loop {
        tokio::time::sleep(TICK).await;
        let due = state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .controllers
            .next_due()
            .is_some_and(|at| at <= Instant::now());
        if due {
            reconcile(&mut state.write().unwrap_or_else(PoisonError::into_inner));
        }
    }
}

/// Brings every emulated controller in line with the cluster and runs the work that is due.
pub fn reconcile(state: &mut State) {
    let now = Instant::now();
    reconcile_namespaces(state);
    // Work done here can cause more (a rollout restarts Citadel, which queues issuance).
    for _ in 0..8 {
        observe_deployments(state, now);
        observe_citadel(state, now);
        if !run_due(state, now) {
            break;
        }
    }
    reconcile_istiod(state);
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

fn encode_data(files: BTreeMap<String, Vec<u8>>) -> serde_json::Map<String, Value> {
    files
        .into_iter()
        .map(|(k, v)| (k, json!(STANDARD.encode(v))))
        .collect()
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// kube-controller-manager's share: every namespace has the ServiceAccount `default` (re-created
/// when deleted), and from Kubernetes 1.20 the ConfigMap `kube-root-ca.crt` with the API
/// server's CA (root-ca-cert-publisher, enabled by default since RootCAConfigMap went beta in
/// 1.20: kubernetes/kubernetes PR #96197; before that it ran only behind the alpha
/// BoundServiceAccountTokenVolume gate).
fn reconcile_namespaces(state: &mut State) {
    let namespaces: Vec<String> = state
        .iter_resource("/namespaces", None)
        .map(|(k, _)| k.2.clone())
        .collect();
    let ca = state.controllers.api_ca_pem.clone();
    let publish =
        !ca.is_empty() && (state.controllers.kube_minor == 0 || state.controllers.kube_minor >= 20);
    for ns in namespaces {
        if state.get_obj("/serviceaccounts", &ns, "default").is_none() {
            state
                .upsert(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": ns}}))
                .expect("default ServiceAccount is valid");
        }
        if !publish {
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

// ---------------------------------------------------------------------------------------------
// Deployments

fn spec_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// The status the deployment controller reports right after it observed a new generation of a
/// `RollingUpdate` Deployment: the new ReplicaSet has a surge pod that is not ready yet, the old
/// pods still serve. `kubectl rollout status` keeps waiting on it ("old replicas are pending
/// termination": kubernetes/kubectl pkg/polymorphichelpers/rollout_status.go, `Status`, which
/// is done only when observedGeneration >= generation, updatedReplicas == spec.replicas,
/// replicas == updatedReplicas and availableReplicas == updatedReplicas).
pub fn rollout_started(obj: &mut Value) {
    let replicas = spec_replicas(obj);
    let now = crate::util::now_rfc3339();
    let name = name_of(obj).to_string();
    let old = obj.get("status").cloned().unwrap_or_default();
    let available = old
        .get("availableReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let ready = old
        .get("readyReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let surge = i64::from(replicas > 0);
    let available_condition = old
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Available").cloned())
        .unwrap_or_else(|| {
            json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                   "message": "Deployment has minimum availability.",
                   "lastUpdateTime": now, "lastTransitionTime": now})
        });
    obj["status"] = json!({
        "observedGeneration": generation(obj),
        "replicas": available.max(replicas) + surge,
        "updatedReplicas": surge,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": surge,
        "conditions": [
            available_condition,
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
             "message": format!("ReplicaSet \"{name}\" is progressing."),
             "lastUpdateTime": now, "lastTransitionTime": now},
        ],
    });
}

/// The status once every replica of the new template is ready.
fn rollout_done(obj: &mut Value) {
    let replicas = spec_replicas(obj);
    let now = crate::util::now_rfc3339();
    let name = name_of(obj).to_string();
    obj["status"] = json!({
        "observedGeneration": generation(obj),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{name}\" has successfully progressed."),
             "lastUpdateTime": now, "lastTransitionTime": now}
        ]
    });
    if replicas == 0
        && let Some(s) = obj["status"].as_object_mut()
    {
        s.remove("readyReplicas");
        s.remove("availableReplicas");
    }
}

fn observe_deployments(state: &mut State, now: Instant) {
    // Cheap on every write: generations only; templates are read for Deployments seen first.
    let current: Vec<((String, String), i64)> = state
        .iter_resource("apps/deployments", None)
        .map(|(k, o)| ((k.1.clone(), k.2.clone()), generation(o)))
        .collect();
    let delay = state.controllers.timing.rollout_delay;
    let mut started = Vec::new();
    for (key, generation) in &current {
        match state.controllers.deployments.get(key) {
            None => {
                // A Deployment seen for the first time runs (the scenario's are already
                // running; one created through the API starts with its status already done).
                let obj = state.get_obj("apps/deployments", &key.0, &key.1);
                let template = obj
                    .and_then(|o| o.pointer("/spec/template"))
                    .cloned()
                    .unwrap_or_default();
                let replicas = obj.map_or(1, spec_replicas);
                state.controllers.deployments.insert(
                    key.clone(),
                    Rollout {
                        generation: *generation,
                        template,
                        replicas,
                    },
                );
                if replicas > 0 {
                    started.push(key.clone());
                }
            }
            Some(r) if *generation > r.generation => {
                let job = Job::Rollout {
                    ns: key.0.clone(),
                    name: key.1.clone(),
                };
                state.controllers.schedule(delay, now, job);
            }
            Some(_) => {}
        }
    }
    if current.len() != state.controllers.deployments.len() {
        let gone: Vec<(String, String)> = state
            .controllers
            .deployments
            .keys()
            .filter(|k| !current.iter().any(|(c, _)| c == *k))
            .cloned()
            .collect();
        for key in gone {
            state.controllers.deployments.remove(&key);
            stopped(state, &key);
        }
    }
    for key in started {
        restarted(state, &key, now);
    }
}

/// The rollout of `ns/name` completes: status done, and the new pods run.
fn finish_rollout(state: &mut State, ns: &str, name: &str, now: Instant) {
    let Some(mut obj) = state.get_obj("apps/deployments", ns, name).cloned() else {
        return;
    };
    let key = (ns.to_string(), name.to_string());
    let Some(before) = state.controllers.deployments.get(&key).cloned() else {
        return;
    };
    let generation = generation(&obj);
    if generation <= before.generation {
        return;
    }
    rollout_done(&mut obj);
    let template = obj.pointer("/spec/template").cloned().unwrap_or_default();
    let replicas = spec_replicas(&obj);
    state
        .upsert(obj)
        .expect("a stored Deployment with a new status is valid");
    state.controllers.deployments.insert(
        key.clone(),
        Rollout {
            generation,
            template: template.clone(),
            replicas,
        },
    );
    if replicas == 0 {
        stopped(state, &key);
    } else if template != before.template || before.replicas == 0 {
        // New pods: the process inside starts afresh.
        restarted(state, &key, now);
    }
}

fn stopped(state: &mut State, key: &(String, String)) {
    if key.1 == "istio-citadel"
        && state
            .controllers
            .citadel
            .as_ref()
            .is_some_and(|c| c.deployment_ns == key.0)
    {
        state.controllers.citadel = None;
        state
            .controllers
            .jobs
            .retain(|(_, j)| matches!(j, Job::Rollout { .. }));
    }
    if key.1 == "istiod"
        && state
            .controllers
            .istiod
            .as_ref()
            .is_some_and(|c| c.ns == key.0)
    {
        state.controllers.istiod = None;
    }
}

fn restarted(state: &mut State, key: &(String, String), now: Instant) {
    let Some(dep) = state.get_obj("apps/deployments", &key.0, &key.1).cloned() else {
        return;
    };
    match key.1.as_str() {
        "istio-citadel" => start_citadel(state, &key.0, &dep, now),
        "istiod" => start_istiod(state, &key.0, &dep),
        _ => {}
    }
}

/// The first container's args and env (`NAME` → value) of a Deployment.
fn container(dep: &Value) -> (Vec<String>, BTreeMap<String, String>, String) {
    let c = dep
        .pointer("/spec/template/spec/containers/0")
        .cloned()
        .unwrap_or_default();
    let args = crate::util::strings(c.get("args"));
    let env = c
        .get("env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some((
                        e.get("name")?.as_str()?.to_string(),
                        e.get("value")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (args, env, image)
}

/// The value of `--name=value` (or `--name value`) in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let long = format!("--{name}");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(&long) {
            if let Some(v) = v.strip_prefix('=') {
                return Some(v);
            }
            if v.is_empty() {
                return Some(it.next().map_or("true", String::as_str));
            }
        }
    }
    None
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// CA loading (Citadel and istiod alike)

/// The self-signed CA of namespace `ns`: `istio-ca-secret` when it holds a usable one, else a
/// fresh root written there (istio/istio@1.4.2 security/pkg/pki/ca/ca.go:101,135-178: Get the
/// secret; create it with `ca-cert.pem`/`ca-key.pem`, type `istio.io/ca-root`, when missing;
/// load it when present). A present but unusable secret would stop the real CA from starting;
/// the sim then signs with a fresh root it does not write.
fn self_signed_ca(state: &mut State, ns: &str, trust_domain: &str) -> Arc<SimCa> {
    if let Some(secret) = state.get_obj("/secrets", ns, "istio-ca-secret") {
        return Arc::new(
            SimCa::from_ca_secret(&decode_data(secret))
                .unwrap_or_else(|_| SimCa::self_signed(trust_domain)),
        );
    }
    let ca = SimCa::self_signed(trust_domain);
    let mut files = ca.ca_secret_data().unwrap_or_default();
    // BuildSecret sets every key; those it has no content for are empty
    // (security/pkg/k8s/secret/secret_util.go:40-61).
    for k in ["cert-chain.pem", "key.pem", "root-cert.pem"] {
        files.entry(k.to_string()).or_default();
    }
    state
        .upsert(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root",
            "metadata": {"name": "istio-ca-secret", "namespace": ns},
            "data": encode_data(files),
        }))
        .expect("istio-ca-secret is valid");
    Arc::new(ca)
}

/// A fingerprint of `cacerts` in `ns` (its data), or `None` without one.
fn cacerts_fingerprint(state: &State, ns: &str) -> Option<String> {
    let s = state.get_obj("/secrets", ns, "cacerts")?;
    Some(s.get("data").map(Value::to_string).unwrap_or_default())
}

/// The plugged-in CA from `cacerts` in `ns`, when present and usable.
fn plugged_ca(state: &State, ns: &str) -> Option<SimCa> {
    let s = state.get_obj("/secrets", ns, "cacerts")?;
    SimCa::from_cacerts(&decode_data(s)).ok()
}

// ---------------------------------------------------------------------------------------------
// Citadel (istio/istio@1.4.2)

/// Citadel's pod starts: `createCA` (security/cmd/istio_ca/main.go:451-483) loads the CA once —
/// `--self-signed-ca=false` (the flag's default, main.go:222) reads the `cacerts` files mounted at
/// /etc/cacerts (`NewPluggedCertIstioCAOptions`, ca.go:189-228); `true` uses `istio-ca-secret`.
/// Nothing reloads it until the next start. Real Citadel with `--self-signed-ca=false` and no
/// usable `cacerts` exits (`fatalf`, main.go:480) and crash-loops; the sim falls back to the
/// self-signed CA instead, so a cluster without `cacerts` still has identities to look at.
/// Then its informers list every ServiceAccount: each is an add event (`saAdded`,
/// workloadsecret.go:224-227,302-308), which issues the missing secrets.
fn start_citadel(state: &mut State, ns: &str, dep: &Value, now: Instant) {
    let (args, env, _) = container(dep);
    let storage_ns = flag(&args, "citadel-storage-namespace")
        .unwrap_or("istio-system")
        .to_string();
    let trust_domain = flag(&args, "trust-domain")
        .filter(|t| !t.is_empty())
        .unwrap_or(TRUST_DOMAIN)
        .to_string();
    let self_signed = flag(&args, "self-signed-ca")
        .and_then(parse_bool)
        .unwrap_or(false);
    let ca = if self_signed {
        self_signed_ca(state, &storage_ns, &trust_domain)
    } else {
        match plugged_ca(state, ns) {
            Some(ca) => Arc::new(ca),
            None => self_signed_ca(state, &storage_ns, &trust_domain),
        }
    };
    // `updateCertInConfigmap` (ca.go:180,224,323-327; security/pkg/k8s/configmap/configmap.go:
    // 32-80): ConfigMap istio-security, key caTLSRootCert = base64 of the CA's cert chain, or of
    // its root when the chain is empty.
    let published = if ca.chain_pem().is_empty() {
        ca.root_pem()
    } else {
        ca.chain_pem().to_string()
    };
    let mut cm = state
        .get_obj("/configmaps", &storage_ns, "istio-security")
        .cloned()
        .unwrap_or_else(|| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "istio-security", "namespace": storage_ns}, "data": {}})
        });
    crate::util::map_at(&mut cm, &["data"])
        .insert("caTLSRootCert".into(), json!(STANDARD.encode(published)));
    state.upsert(cm).expect("istio-security ConfigMap is valid");

    // `--custom-dns-names=SA.NS:DOMAIN,…` and the webhook accounts (main.go:165-172,336-339;
    // security/pkg/k8s/controller/customdnsname.go:30-63).
    let mut webhooks = BTreeMap::new();
    if flag(&args, "append-dns-names").and_then(parse_bool) != Some(false) {
        for (sa, svc) in [
            (
                "istio-sidecar-injector-service-account",
                "istio-sidecar-injector",
            ),
            ("istio-galley-service-account", "istio-galley"),
        ] {
            webhooks.insert(sa.to_string(), (svc.to_string(), storage_ns.clone()));
        }
    }
    let mut custom_dns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in flag(&args, "custom-dns-names").unwrap_or("").split(',') {
        if let Some((account, domain)) = entry.split_once(':') {
            custom_dns
                .entry(account.to_string())
                .or_default()
                .push(domain.to_string());
        }
    }
    let resync = state.controllers.timing.resync;
    let issued = state
        .controllers
        .citadel
        .take()
        .map(|c| c.issued)
        .unwrap_or_default();
    state
        .controllers
        .jobs
        .retain(|(_, j)| matches!(j, Job::Rollout { .. }));
    let mut citadel = Citadel {
        deployment_ns: ns.to_string(),
        storage_ns,
        ca,
        trust_domain,
        enable_by_default: env
            .get("CITADEL_ENABLE_NAMESPACES_BY_DEFAULT")
            .and_then(|v| parse_bool(v))
            .unwrap_or(true),
        pkcs8: flag(&args, "pkcs8-keys")
            .and_then(parse_bool)
            .unwrap_or(false),
        webhooks,
        custom_dns,
        known_sas: BTreeSet::new(),
        known_secrets: BTreeMap::new(),
        managed: BTreeMap::new(),
        next_resync: now + resync,
        issued,
        rotation: BTreeMap::new(),
    };
    // The informers' first list: secrets and namespaces are only remembered (no add handlers);
    // every ServiceAccount is an add.
    citadel.known_secrets = istio_secrets(state);
    citadel.managed = namespaces_managed(state, &citadel);
    state.controllers.citadel = Some(citadel);
}

fn istio_secrets(state: &State) -> BTreeMap<(String, String), (String, String)> {
    state
        .iter_resource("/secrets", None)
        .filter(|(_, s)| s.get("type").and_then(Value::as_str) == Some(ISTIO_SECRET_TYPE))
        .map(|(k, s)| {
            (
                (k.1.clone(), k.2.clone()),
                (
                    s.pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    s.pointer("/metadata/annotations/istio.io~1service-account.name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                ),
            )
        })
        .collect()
}

/// `namespaceIsManaged` (workloadsecret.go:404-427): label `ca.istio.io/override` "true"/"false"
/// wins; else `ca.istio.io/env` must name Citadel's storage namespace; without it,
/// CITADEL_ENABLE_NAMESPACES_BY_DEFAULT decides.
fn namespace_managed(citadel: &Citadel, ns: &Value) -> bool {
    match label(ns, "ca.istio.io/override") {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    match label(ns, "ca.istio.io/env") {
        None => citadel.enable_by_default,
        Some(target) => target == citadel.storage_ns,
    }
}

fn namespaces_managed(state: &State, citadel: &Citadel) -> BTreeMap<String, bool> {
    state
        .iter_resource("/namespaces", None)
        .map(|(k, ns)| (k.2.clone(), namespace_managed(citadel, ns)))
        .collect()
}

/// `citadelManagedObject` (workloadsecret.go:284-299): an object's namespace decides; a
/// namespace that cannot be read falls back to the default.
fn object_managed(state: &State, citadel: &Citadel, ns: &str) -> bool {
    state
        .get_obj("/namespaces", "", ns)
        .map_or(citadel.enable_by_default, |n| namespace_managed(citadel, n))
}

/// Turns what changed since Citadel last looked into its informers' events.
fn observe_citadel(state: &mut State, now: Instant) {
    let Some(mut citadel) = state.controllers.citadel.take() else {
        return;
    };
    let delay = state.controllers.timing.issue_delay;
    let sas: BTreeSet<(String, String)> = state
        .iter_resource("/serviceaccounts", None)
        .map(|(k, _)| (k.1.clone(), k.2.clone()))
        .collect();
    let secrets = istio_secrets(state);
    let managed = namespaces_managed(state, &citadel);
    let mut jobs = Vec::new();
    // saAdded / saDeleted (workloadsecret.go:302-315).
    for (ns, sa) in sas.difference(&citadel.known_sas) {
        jobs.push(Job::Upsert {
            ns: ns.clone(),
            sa: sa.clone(),
        });
    }
    for (ns, sa) in citadel.known_sas.difference(&sas) {
        jobs.push(Job::DeleteSecret {
            ns: ns.clone(),
            name: format!("istio.{sa}"),
        });
    }
    // scrtDeleted / scrtUpdated (workloadsecret.go:373-388,491-541); adds have no handler.
    for (key, (rv, sa)) in &citadel.known_secrets {
        match secrets.get(key) {
            None => jobs.push(Job::Recreate {
                ns: key.0.clone(),
                sa: sa.clone(),
            }),
            Some((now_rv, _)) if now_rv != rv => jobs.push(Job::Check {
                ns: key.0.clone(),
                name: key.1.clone(),
            }),
            Some(_) => {}
        }
    }
    // namespaceUpdated (workloadsecret.go:390-401): newly managed → all its accounts.
    for (ns, now_managed) in &managed {
        if *now_managed && citadel.managed.get(ns) == Some(&false) {
            jobs.push(Job::Retroactive { ns: ns.clone() });
        }
    }
    // The Secret informer's resync delivers an update for every secret (workloadsecret.go:243):
    // checked now, the resync period being the wait.
    let mut resync = Vec::new();
    if now >= citadel.next_resync {
        for (ns, name) in secrets.keys() {
            resync.push(Job::Check {
                ns: ns.clone(),
                name: name.clone(),
            });
        }
        citadel.next_resync = now + state.controllers.timing.resync;
    }
    citadel.known_sas = sas;
    citadel.known_secrets = secrets;
    citadel.managed = managed;
    state.controllers.citadel = Some(citadel);
    for job in jobs {
        state.controllers.schedule(delay, now, job);
    }
    for job in resync {
        state.controllers.schedule(Duration::ZERO, now, job);
    }
}

/// Runs the jobs due at `now`; whether any ran.
fn run_due(state: &mut State, now: Instant) -> bool {
    let mut due: Vec<(Instant, Job)> = Vec::new();
    state.controllers.jobs.retain(|(at, job)| {
        if *at <= now {
            due.push((*at, job.clone()));
            false
        } else {
            true
        }
    });
    due.sort_by_key(|(at, _)| *at);
    let ran = !due.is_empty();
    for (_, job) in due {
        run(state, job, now);
    }
    ran
}

fn run(state: &mut State, job: Job, now: Instant) {
    if let Job::Rollout { ns, name } = &job {
        finish_rollout(state, ns, name, now);
        return;
    }
    let Some(mut citadel) = state.controllers.citadel.take() else {
        return;
    };
    let citadel_ref = &mut citadel;
    match job {
        Job::Rollout { .. } => {}
        Job::Upsert { ns, sa } => {
            // saAdded checks the namespace, then upsertSecret (workloadsecret.go:302-360).
            if state.get_obj("/serviceaccounts", &ns, &sa).is_some()
                && object_managed(state, citadel_ref, &ns)
            {
                upsert_secret(state, citadel_ref, &ns, &sa);
            }
        }
        Job::Retroactive { ns } => {
            // enableNamespaceRetroactive (workloadsecret.go:432-444): no managed check again.
            let accounts: Vec<String> = state
                .iter_resource("/serviceaccounts", Some(&ns))
                .map(|(k, _)| k.2.clone())
                .collect();
            for sa in accounts {
                upsert_secret(state, citadel_ref, &ns, &sa);
            }
        }
        Job::DeleteSecret { ns, name } => {
            state.remove("/secrets", &ns, &name);
        }
        Job::Recreate { ns, sa } => {
            // scrtDeleted (workloadsecret.go:373-388): only while the ServiceAccount exists.
            if state.get_obj("/serviceaccounts", &ns, &sa).is_some()
                && object_managed(state, citadel_ref, &ns)
            {
                upsert_secret(state, citadel_ref, &ns, &sa);
            }
        }
        Job::Check { ns, name } => check_secret(state, citadel_ref, &ns, &name),
    }
    state.controllers.citadel = Some(citadel);
}

/// `generateKeyAndCert` for `ns/sa` with the loaded CA.
fn issue(citadel: &mut Citadel, ns: &str, sa: &str) -> BTreeMap<String, Vec<u8>> {
    // workloadsecret.go:447-463: webhook accounts in Citadel's namespace get
    // `<svc>.<ns>.svc` and `<svc>.<ns>`; `--custom-dns-names` add theirs.
    let mut dns = Vec::new();
    if let Some((svc, svc_ns)) = citadel.webhooks.get(sa)
        && svc_ns == ns
    {
        dns.push(format!("{svc}.{svc_ns}.svc"));
        dns.push(format!("{svc}.{svc_ns}"));
    }
    if let Some(domains) = citadel.custom_dns.get(&format!("{sa}.{ns}")) {
        dns.extend(domains.iter().cloned());
    }
    // Citadel makes a fresh key per issuance; the sim draws the next key of the pool.
    let nth = citadel
        .issued
        .entry((ns.to_string(), sa.to_string()))
        .or_default();
    let key = crate::ca::pool_index(&format!("{ns}/{sa}")) + *nth;
    *nth += 1;
    citadel.ca.issue(&Workload {
        trust_domain: &citadel.trust_domain,
        namespace: ns,
        service_account: sa,
        dns_names: &dns,
        key,
        pkcs8: citadel.pkcs8,
    })
}

/// `upsertSecret` (workloadsecret.go:317-360): nothing when the secret exists; else a new one.
fn upsert_secret(state: &mut State, citadel: &mut Citadel, ns: &str, sa: &str) {
    let name = format!("istio.{sa}");
    if state.get_obj("/secrets", ns, &name).is_some() {
        return;
    }
    let data = issue(citadel, ns, sa);
    state
        .upsert(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": ns,
                "annotations": {"istio.io/service-account.name": sa},
            },
            "type": ISTIO_SECRET_TYPE,
            "data": encode_data(data),
        }))
        .expect("citadel secret is valid");
}

/// When a `cert-chain.pem` enters Citadel's rotation grace period (unix seconds; `i64::MIN` when
/// unreadable, so an unreadable or expired certificate is always due): `GetWaitTime`
/// (security/pkg/util/certutil.go:46-73) with grace ratio 0.5 (`--workload-cert-grace-period-ratio`
/// default, security/pkg/cmd/constants.go:45) and a 10 min floor (constants.go:48).
fn rotation_time(cert_chain: &[u8]) -> i64 {
    let Some(pem) = x509_parser::pem::Pem::iter_from_buffer(cert_chain)
        .next()
        .and_then(Result::ok)
    else {
        return i64::MIN;
    };
    let Ok(cert) = pem.parse_x509() else {
        return i64::MIN;
    };
    let v = cert.validity();
    let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
    let grace = ((to - from) / 2).max(600);
    to - grace
}

/// `scrtUpdated` (workloadsecret.go:491-541): a secret whose root is not the loaded CA's, or whose
/// certificate nears expiry, is refreshed — unless its namespace is not managed, where Citadel
/// means to delete it but passes the secret's name as the account name (line 522), so it deletes
/// `istio.istio.<sa>` (`deleteSecret`, line 362-371), which normally does not exist.
fn check_secret(state: &mut State, citadel: &mut Citadel, ns: &str, name: &str) {
    let Some(secret) = state.get_obj("/secrets", ns, name).cloned() else {
        return;
    };
    if secret.get("type").and_then(Value::as_str) != Some(ISTIO_SECRET_TYPE) {
        return;
    }
    let data = decode_data(&secret);
    // The rotation time of a secret version is parsed once (resyncs re-check every secret).
    let rv = secret
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let key = (ns.to_string(), name.to_string());
    let rotate_at = match citadel.rotation.get(&key) {
        Some((seen, at)) if *seen == rv => *at,
        _ => {
            let at = rotation_time(data.get("cert-chain.pem").map_or(&[][..], Vec::as_slice));
            citadel.rotation.insert(key, (rv, at));
            at
        }
    };
    let expiring = crate::util::now_unix() >= rotate_at;
    let root = citadel.ca.root_pem();
    let outdated = data.get("root-cert.pem").map(Vec::as_slice) != Some(root.as_bytes());
    if !expiring && !outdated {
        return;
    }
    if let Some(n) = state.get_obj("/namespaces", "", ns)
        && !namespace_managed(citadel, n)
    {
        state.remove("/secrets", ns, &format!("istio.{name}"));
        return;
    }
    // refreshSecret (workloadsecret.go:586-601): new key and chain for the annotated account,
    // the CA's root; the rest of the secret is kept.
    let sa = secret
        .pointer("/metadata/annotations/istio.io~1service-account.name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let files = issue(citadel, ns, &sa);
    let mut updated = secret;
    let map = crate::util::map_at(&mut updated, &["data"]);
    for (k, v) in encode_data(files) {
        map.insert(k, v);
    }
    state.upsert(updated).expect("refreshed secret is valid");
}

// ---------------------------------------------------------------------------------------------
// istiod

/// istiod's pod starts: `createIstioCA` (istio/istio@1.22.0 pilot/pkg/bootstrap/istio_ca.go:
/// 424-478; 1.8.0 the same shape) uses the mounted `cacerts` when it has `ca-key.pem` (plugged-in),
/// else the self-signed CA of `istio-ca-secret`. Like Citadel, a broken `cacerts` would stop the
/// real istiod; the sim falls back to the self-signed CA.
fn start_istiod(state: &mut State, ns: &str, dep: &Value) {
    let (_, env, image) = container(dep);
    let release = Release::from_image(&image).unwrap_or(Release::CURRENT);
    let env_flag = |name: &str| env.get(name).and_then(|v| parse_bool(v));
    let plugged_mode = state
        .get_obj("/secrets", ns, "cacerts")
        .is_some_and(|s| s.pointer("/data/ca-key.pem").is_some());
    let (ca, plugged) = match plugged_mode.then(|| plugged_ca(state, ns)).flatten() {
        Some(ca) => (Arc::new(ca), cacerts_fingerprint(state, ns)),
        None => (self_signed_ca(state, ns, TRUST_DOMAIN), None),
    };
    // The cacerts file watcher (`initCACertsWatcher`): from 1.19 whenever plugged in
    // (istio_ca.go:468 @1.22.0); 1.12–1.18 only with AUTO_RELOAD_PLUGIN_CERTS=true (default false,
    // pilot/pkg/features/pilot.go:544-548 @1.12.0; istio_ca.go:446-447); none before 1.12.
    let auto_reload = plugged.is_some()
        && (release >= Release(1, 19)
            || (release >= Release(1, 12) && env_flag("AUTO_RELOAD_PLUGIN_CERTS") == Some(true)));
    // ENABLE_ENHANCED_RESOURCE_SCOPING: default true from 1.22 (pilot/pkg/features/
    // experimental.go:182 @1.22.0), false 1.16–1.21 (experimental.go:200 @1.21.0, pilot.go:679
    // @1.16.0); before 1.16 the namespace controller has no discovery filter at all.
    let enhanced_scoping = release >= Release(1, 16)
        && env_flag("ENABLE_ENHANCED_RESOURCE_SCOPING").unwrap_or(release >= Release(1, 22));
    state.controllers.istiod = Some(Istiod {
        ns: ns.to_string(),
        release,
        ca,
        plugged,
        auto_reload,
        enhanced_scoping,
    });
}

/// Namespaces istiod's namespace controller never writes to, per release: none up to 1.10
/// (pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go @1.8.0 has no filter);
/// `inject.IgnoredNamespaces` from 1.11 (namespacecontroller.go:180-188 @1.12.0;
/// pkg/kube/inject/initializer.go:28-33 @1.12.0); without kube-system from 1.21 (“kube-system is
/// not skipped to enable deploying ztunnel”, namespacecontroller.go:82-83 @1.21.0, :76-77 @1.22.0).
pub fn istiod_ignored_namespaces(release: Release) -> &'static [&'static str] {
    if release < Release(1, 11) {
        &[]
    } else if release < Release(1, 21) {
        &[
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "local-path-storage",
        ]
    } else {
        &["kube-public", "kube-node-lease", "local-path-storage"]
    }
}

/// Whether a `metav1.LabelSelector` (matchLabels, matchExpressions) selects `labels`.
fn selector_matches(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object)
        && m.iter().any(|(k, v)| get(k) != v.as_str())
    {
        return false;
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// `discoverySelectors` of the mesh config (ConfigMap `istio`, key `mesh`, in istiod's namespace).
fn discovery_selectors(state: &State, ns: &str) -> Vec<Value> {
    let Some(mesh) = state
        .get_obj("/configmaps", ns, "istio")
        .and_then(|c| c.pointer("/data/mesh"))
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    let mesh: Value = serde_saphyr::from_str(mesh).unwrap_or_default();
    mesh.get("discoverySelectors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The namespace controller's steady state: `istio-ca-root-cert` (label `istio.io/config: "true"`,
/// key `root-cert.pem`) in every namespace it handles, created when missing and its data merged
/// when different (security/pkg/k8s/configutil.go:34-97 @1.22.0). Terminating namespaces are
/// skipped. With enhanced scoping and `discoverySelectors`, only selected namespaces get it
/// (pkg/kube/namespace/filter.go:99-172 @1.22.0: selectors are ORed, none selects all); a
/// ConfigMap in a deselected namespace is left alone, not deleted.
fn reconcile_istiod(state: &mut State) {
    let Some(istiod) = state.controllers.istiod.take() else {
        return;
    };
    let mut istiod = istiod;
    // The cacerts watcher (istio_ca.go:298-352 @1.22.0, `handleEvent`): a changed cacerts is
    // taken only when its root-cert.pem equals the current root (a new intermediate); a new root
    // needs ISTIO_MULTIROOT_MESH (off by default, pilot/pkg/features/pilot.go:157) or a restart.
    if istiod.auto_reload {
        let fp = cacerts_fingerprint(state, &istiod.ns);
        if fp.is_some() && fp != istiod.plugged {
            if let Some(ca) = plugged_ca(state, &istiod.ns)
                && ca.root_pem() == istiod.ca.root_pem()
            {
                istiod.ca = Arc::new(ca);
            }
            istiod.plugged = fp;
        }
    }
    let root = istiod.ca.root_pem();
    let ignored = istiod_ignored_namespaces(istiod.release);
    let selectors = if istiod.enhanced_scoping {
        discovery_selectors(state, &istiod.ns)
    } else {
        Vec::new()
    };
    let targets: Vec<String> = state
        .iter_resource("/namespaces", None)
        .filter(|(k, ns)| {
            !ignored.contains(&k.2.as_str())
                && ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating")
                && (selectors.is_empty() || {
                    let labels = ns
                        .pointer("/metadata/labels")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    selectors.iter().any(|s| selector_matches(s, &labels))
                })
        })
        .map(|(k, _)| k.2.clone())
        .collect();
    for ns in targets {
        let cm = match state.get_obj("/configmaps", &ns, "istio-ca-root-cert") {
            Some(cm)
                if cm.pointer("/data/root-cert.pem").and_then(Value::as_str) == Some(&root) =>
            {
                continue;
            }
            Some(cm) => {
                let mut cm = cm.clone();
                crate::util::map_at(&mut cm, &["data"]).insert("root-cert.pem".into(), json!(root));
                cm
            }
            None => json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "istio-ca-root-cert",
                    "namespace": ns,
                    "labels": {"istio.io/config": "true"},
                },
                "data": {"root-cert.pem": root},
            }),
        };
        state
            .upsert(cm)
            .expect("istio-ca-root-cert ConfigMap is valid");
    }
    state.controllers.istiod = Some(istiod);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    };

    #[test]
    fn releases_come_from_image_tags() {
        for (image, want) in [
            ("docker.io/istio/pilot:1.22.0", Some(Release(1, 22))),
            (
                "gcr.io/istio-release/pilot:1.8.6-distroless",
                Some(Release(1, 8)),
            ),
            ("localhost:5000/istio/pilot:1.13", Some(Release(1, 13))),
            (
                "docker.io/istio/citadel:1.4.2@sha256:abc",
                Some(Release(1, 4)),
            ),
            ("docker.io/istio/pilot:latest", None),
            ("pilot", None),
        ] {
            assert_eq!(Release::from_image(image), want, "{image}");
        }
        assert_eq!(Release::parse("v1.24.2"), Some(Release(1, 24)));
        assert!(Release(1, 9) < Release(1, 12));
        assert_eq!(Release(1, 22).to_string(), "1.22");
    }

    #[test]
    fn flags_parse_as_pflag_does() {
        let args: Vec<String> = [
            "--self-signed-ca=false",
            "--trust-domain",
            "example.org",
            "--pkcs8-keys",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        assert_eq!(flag(&args, "self-signed-ca"), Some("false"));
        assert_eq!(flag(&args, "trust-domain"), Some("example.org"));
        assert_eq!(flag(&args, "pkcs8-keys"), Some("true"));
        assert_eq!(flag(&args, "self-signed"), None, "no prefix matches");
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn label_selectors_match_as_metav1_does() {
        let labels: serde_json::Map<String, Value> =
            serde_json::from_value(json!({"mesh": "on", "env": "prod"})).unwrap();
        let yes = [
            json!({}),
            json!({"matchLabels": {"mesh": "on"}}),
            json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]}),
            json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}),
            json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}),
            json!({"matchExpressions": [{"key": "mesh", "operator": "Exists"}]}),
        ];
        let no = [
            json!({"matchLabels": {"mesh": "off"}}),
            json!({"matchLabels": {"mesh": "on"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]}),
            json!({"matchExpressions": [{"key": "env", "operator": "Bogus"}]}),
        ];
        for s in &yes {
            assert!(selector_matches(s, &labels), "{s}");
        }
        for s in &no {
            assert!(!selector_matches(s, &labels), "{s}");
        }
    }

    #[test]
    fn ignored_namespaces_per_release() {
        assert!(istiod_ignored_namespaces(Release(1, 8)).is_empty());
        assert!(istiod_ignored_namespaces(Release(1, 10)).is_empty());
        assert!(istiod_ignored_namespaces(Release(1, 11)).contains(&"kube-system"));
        assert!(istiod_ignored_namespaces(Release(1, 20)).contains(&"kube-system"));
        let now = istiod_ignored_namespaces(Release(1, 21));
        assert!(!now.contains(&"kube-system") && now.contains(&"kube-public"));
    }

    fn cert_valid(from: i64, to: i64) -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        p.not_before = epoch + Duration::from_secs(from as u64);
        p.not_after = epoch + Duration::from_secs(to as u64);
        p.self_signed(&key).unwrap().pem().into_bytes()
    }

    fn needs_rotation(cert_chain: &[u8]) -> bool {
        crate::util::now_unix() >= rotation_time(cert_chain)
    }

    #[test]
    fn rotation_follows_citadels_grace_period() {
        let now = crate::util::now_unix();
        let day = 24 * 3600;
        // 90 days, issued a day ago: far from the 45-day grace period.
        assert!(!needs_rotation(&cert_valid(now - day, now + 89 * day)));
        // 90 days, 46 days gone: inside the grace period.
        assert!(needs_rotation(&cert_valid(now - 46 * day, now + 44 * day)));
        // Short-lived: the 10 minute floor applies.
        assert!(needs_rotation(&cert_valid(now - 60, now + 300)));
        assert!(!needs_rotation(&cert_valid(now - 60, now + 3600)));
        // Expired, empty or garbage: rotate.
        assert!(needs_rotation(&cert_valid(now - 2 * day, now - day)));
        assert!(needs_rotation(b""));
        assert!(needs_rotation(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ));
    }

    #[test]
    fn rollout_statuses_read_as_kubectl_reads_them() {
        let mut d = json!({"metadata": {"name": "x", "generation": 3}, "spec": {"replicas": 2},
                           "status": {"replicas": 2, "availableReplicas": 2, "readyReplicas": 2}});
        rollout_started(&mut d);
        let s = &d["status"];
        assert_eq!(s["observedGeneration"], 3);
        // rollout_status.go: updated < spec.replicas → still waiting.
        assert!(s["updatedReplicas"].as_i64() < d["spec"]["replicas"].as_i64());
        assert_eq!(s["conditions"][1]["reason"], "ReplicaSetUpdated");
        rollout_done(&mut d);
        let s = &d["status"];
        assert_eq!(
            (
                s["replicas"].as_i64(),
                s["updatedReplicas"].as_i64(),
                s["availableReplicas"].as_i64()
            ),
            (Some(2), Some(2), Some(2))
        );
        assert_eq!(s["conditions"][1]["reason"], "NewReplicaSetAvailable");
    }

    /// A root and two intermediates under it, as `cacerts` data.
    fn cacerts_under_one_root() -> (Vec<u8>, [BTreeMap<String, Vec<u8>>; 2]) {
        let now = crate::util::now_unix() as u64;
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let ca = |cn: &str| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.not_before = epoch + Duration::from_secs(now - 60);
            p.not_after = epoch + Duration::from_secs(now + 3600);
            p
        };
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root_params = ca("Root");
        let root = root_params.self_signed(&root_key).unwrap().pem();
        let issuer = Issuer::new(root_params, &root_key);
        let inter = |cn: &str| {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let cert = ca(cn).signed_by(&key, &issuer).unwrap().pem();
            [
                ("ca-cert.pem", cert.clone()),
                ("ca-key.pem", key.serialize_pem()),
                ("root-cert.pem", root.clone()),
                ("cert-chain.pem", cert),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_bytes()))
            .collect()
        };
        (root.clone().into_bytes(), [inter("A"), inter("B")])
    }

    fn secret(data: &BTreeMap<String, Vec<u8>>) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cacerts", "namespace": "istio-system"},
               "data": encode_data(data.clone())})
    }

    fn istiod_state(tag: &str, env: &str, cacerts: &BTreeMap<String, Vec<u8>>) -> State {
        let scenario = crate::Scenario::from_yaml(&format!(
            "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nkubeVersion: \"1.21\"\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: istiod, namespace: istio-system}}\n\
             spec:\n  selector: {{matchLabels: {{app: istiod}}}}\n  template:\n    metadata: {{labels: {{app: istiod}}}}\n\
             \x20   spec: {{containers: [{{name: discovery, image: \"docker.io/istio/pilot:{tag}\", env: [{env}]}}]}}\n"
        ))
        .unwrap()
        .with_objects([secret(cacerts)]);
        scenario.load(6443, "").unwrap()
    }

    /// istiod's cacerts watcher: from 1.19 (1.12–1.18 with AUTO_RELOAD_PLUGIN_CERTS) a new
    /// intermediate under the same root is taken at once; a new root never.
    #[test]
    fn istiod_reloads_a_new_intermediate_under_its_root() {
        let (root, [a, b]) = cacerts_under_one_root();
        let chain = |s: &State| {
            s.controllers
                .istiod
                .as_ref()
                .unwrap()
                .ca
                .chain_pem()
                .to_string()
        };
        for (tag, env, reloads) in [
            ("1.22.0", "", true),
            ("1.19.0", "", true),
            ("1.18.0", "", false),
            (
                "1.13.0",
                "{name: AUTO_RELOAD_PLUGIN_CERTS, value: 'true'}",
                true,
            ),
            (
                "1.8.0",
                "{name: AUTO_RELOAD_PLUGIN_CERTS, value: 'true'}",
                false,
            ),
        ] {
            let mut state = istiod_state(tag, env, &a);
            assert_eq!(
                state.controllers.istiod_root().unwrap().as_bytes(),
                root.as_slice()
            );
            assert_eq!(
                chain(&state).as_bytes(),
                a["cert-chain.pem"].as_slice(),
                "{tag}"
            );
            state.upsert(secret(&b)).unwrap();
            reconcile(&mut state);
            let want = if reloads { &b } else { &a };
            assert_eq!(
                chain(&state).as_bytes(),
                want["cert-chain.pem"].as_slice(),
                "{tag} {env}"
            );
        }
        // Another root: kept until a restart, whatever the release.
        let (_, [other, _]) = cacerts_under_one_root();
        let mut state = istiod_state("1.22.0", "", &a);
        state.upsert(secret(&other)).unwrap();
        reconcile(&mut state);
        assert_eq!(
            state.controllers.istiod_root().unwrap().as_bytes(),
            root.as_slice()
        );
    }

    /// Citadel with `--self-signed-ca=false` takes a usable cacerts at start; without one it runs
    /// on istio-ca-secret's CA, and the same one after a restart.
    #[test]
    fn citadel_start_picks_its_ca() {
        let (root, [a, _]) = cacerts_under_one_root();
        let yaml = "apiVersion: kube-sim.meshvm.dev/v1\nkind: Scenario\nkubeVersion: \"1.14\"\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istio-citadel, namespace: istio-system}\n\
             spec:\n  selector: {matchLabels: {istio: citadel}}\n  template:\n    metadata: {labels: {istio: citadel}}\n\
             \x20   spec: {containers: [{name: citadel, image: docker.io/istio/citadel:1.4.2, args: [--self-signed-ca=false]}]}\n";
        let plugged = crate::Scenario::from_yaml(yaml)
            .unwrap()
            .with_objects([secret(&a)])
            .load(6443, "")
            .unwrap();
        assert_eq!(
            plugged.controllers.citadel_root().unwrap().as_bytes(),
            root.as_slice()
        );
        assert!(
            plugged
                .get_obj("/secrets", "istio-system", "istio-ca-secret")
                .is_none()
        );

        let mut state = crate::Scenario::from_yaml(yaml)
            .unwrap()
            .load(6443, "")
            .unwrap();
        let first = state.controllers.citadel_root().unwrap();
        let stored = state
            .get_obj("/secrets", "istio-system", "istio-ca-secret")
            .cloned()
            .unwrap();
        assert_eq!(decode_data(&stored)["ca-cert.pem"], first.as_bytes());
        // A restart reloads istio-ca-secret: the same root.
        let dep = state
            .get_obj("apps/deployments", "istio-system", "istio-citadel")
            .cloned()
            .unwrap();
        start_citadel(&mut state, "istio-system", &dep, Instant::now());
        assert_eq!(state.controllers.citadel_root().unwrap(), first);
        assert!(
            state.controllers.next_due().is_some(),
            "the resync is scheduled"
        );
    }
}
