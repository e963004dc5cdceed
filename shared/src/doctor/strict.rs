//! `--fix --strict`: the staged STRICT rollout. Only namespaces the readiness table marks
//! `ready` are made STRICT; blocked ones are listed with their blockers and left alone. Every
//! write goes through the one executor ([`crate::plan::write`]), and what was there before is
//! kept in an undo file that `doctor --fix --undo FILE` applies.
//!
//! The objects, per era:
//! - Istio 1.4: a namespace `authentication.istio.io/v1alpha1` Policy `default` with
//!   `peers: [{mtls: {}}]` (an `mtls` peer without `mode` is STRICT: the CRD's `mode` enum is
//!   STRICT/PERMISSIVE, istio-1.4.2 install/kubernetes/helm/istio-init/files/crd-10.yaml:3067-3079,
//!   and Istio's own mesh-wide mTLS chart writes exactly `peers: [- mtls: {}]`,
//!   istio-1.4.2 install/kubernetes/helm/istio/charts/security/templates/enable-mesh-mtls.yaml:7-17,
//!   where the permissive one adds `mode: PERMISSIVE`, enable-mesh-permissive.yaml).
//!   The MeshPolicy `default` goes STRICT the same way, only when every namespace is ready
//!   and no `-n` narrowed the run.
//! - Modern: a PeerAuthentication `default` in the namespace with `mtls.mode: STRICT`, at the
//!   version the cluster serves ([`crate::istio::IstioKind::served_version`]).
//!
//! A namespace whose policy already says STRICT gets nothing, so a second run changes nothing.
//! A namespace-wide policy that exists under another name is changed in place rather than
//! shadowed by a second one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::CheckContext;
use super::mesh::PeerMode;
use super::report::NamespaceReadiness;
use crate::istio::Era;
use crate::kube::Connection;
use crate::plan::write::{Kind, Precondition, Resource, Same, Write};
use crate::plan::{Action, Change, Plan, State};
use crate::snapshot::{Obj, Snapshot};

/// The name of the objects the rollout creates (Istio's own convention for namespace- and
/// mesh-wide policy).
pub const NAME: &str = "default";

/// What the undo file says it is.
pub const UNDO_KIND: &str = "MeshvmStrictUndo";

/// How long `--wait` waits for one namespace when `--timeout` does not say (as prepare's
/// `--timeout` for its rollout).
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the rollout or its undo could not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `-n` names a namespace the readiness table does not have.
    #[error("-n {namespace}: no such namespace in the readiness table")]
    UnknownNamespace {
        /// The namespace.
        namespace: String,
        /// The namespaces there are.
        known: Vec<String>,
    },
    /// doctor could not tell the Istio era, so not which policy kind to write.
    #[error(
        "cannot tell the Istio era of this cluster, so not which policy kind makes a namespace STRICT"
    )]
    NoEra,
    /// The cluster does not serve the policy kind.
    #[error("the cluster does not serve {resource}")]
    NotServed {
        /// e.g. `peerauthentications.security.istio.io`.
        resource: String,
    },
    /// The undo file exists already.
    #[error("--undo-file {}: the file exists (it may hold an earlier run's undo)", path.display())]
    UndoExists {
        /// The path.
        path: PathBuf,
    },
    /// The undo file could not be written or read.
    #[error("{}: {action}", path.display())]
    UndoIo {
        /// The path.
        path: PathBuf,
        /// What failed.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The undo file is not one `--undo-file` wrote.
    #[error("--undo {}: not an undo file of `doctor --fix --strict --undo-file`: {reason}", path.display())]
    UndoInvalid {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--wait` found a namespace unhealthy after it was made STRICT (or could not tell in
    /// time): the rollout stopped there.
    #[error(
        "--wait: {namespace} is not healthy after it was made STRICT: {why}; the rollout stopped there. Applied: {}. Not applied: {}",
        list(applied),
        list(not_applied)
    )]
    WaitStopped {
        /// The namespace.
        namespace: String,
        /// What the fresh observation showed.
        why: String,
        /// The objects written (`Kind ns/name`).
        applied: Vec<String>,
        /// The objects not written.
        not_applied: Vec<String>,
        /// The command that undoes what was applied.
        undo: String,
    },
    /// `--wait --prometheus` cannot learn how often Prometheus scrapes, so not when a fresh
    /// answer can be trusted: nothing was applied.
    #[error(
        "--wait: cannot read Prometheus's configuration for its scrape interval: {why}; nothing was applied"
    )]
    WaitNoInterval {
        /// Why.
        why: String,
    },
    /// `--timeout` is shorter than the two scrape intervals `--wait` waits before it asks
    /// Prometheus: no namespace could ever be shown healthy. Nothing was applied.
    #[error(
        "--timeout {timeout} is shorter than two of Prometheus's scrape intervals ({interval}, {why}): --wait could never see a namespace healthy; nothing was applied"
    )]
    WaitTimeoutTooShort {
        /// `--timeout`, as a duration word.
        timeout: String,
        /// The scrape interval.
        interval: String,
        /// Two intervals, as a duration word.
        settle: String,
        /// Where the interval comes from.
        why: String,
    },
    /// The undo file was written for another cluster.
    #[error("--undo {}: written for context {written}, not {current}", path.display())]
    UndoContext {
        /// The path.
        path: PathBuf,
        /// The context it was written for.
        written: String,
        /// The context of this run.
        current: String,
    },
}

impl crate::errors::Diagnose for Error {
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::UnknownNamespace { known, .. } => format!(
                "name namespaces doctor reports (comma-separated): {}",
                known.join(", ")
            ),
            Error::NoEra => "pass --istio-namespace NS if the control plane runs elsewhere".into(),
            Error::NotServed { .. } => {
                "check the Istio CRDs are installed: `kubectl get crd` lists them".into()
            }
            Error::UndoExists { .. } => {
                "pick a new file name, or move the old one away once it is no longer needed".into()
            }
            Error::UndoIo { .. } => "check the path and its permissions".into(),
            Error::UndoInvalid { .. } => {
                "pass the file `kubectl meshvm doctor --fix --strict --undo-file FILE` wrote".into()
            }
            Error::UndoContext { written, .. } => {
                format!("run `kubectl meshvm doctor --fix --context {written} --undo FILE`")
            }
            Error::WaitNoInterval { .. } => "check that Prometheus answers with the URL given, or drop --prometheus to wait on doctor's checks alone".into(),
            Error::WaitTimeoutTooShort { settle, .. } => {
                format!("give --timeout {settle} or more (0: no limit)")
            }
            Error::WaitStopped { undo, .. } => format!(
                "undo what was applied with `{undo}`, or fix what the fresh check shows and run the rollout again (it skips namespaces already STRICT)"
            ),
        })
    }
}

/// `a, b`, or `none`.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// One write of the rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Policy, MeshPolicy or PeerAuthentication.
    pub kind: Kind,
    /// The object as it will be (a replace carries the `resourceVersion` it was read at).
    pub object: Value,
    /// What it replaces, as read (`None`: it is created).
    pub previous: Option<Value>,
}

impl Step {
    fn namespace(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The planned rollout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollout {
    /// What is written, in order.
    pub steps: Vec<Step>,
    /// Ready namespaces already STRICT (nothing to write).
    pub already: Vec<String>,
    /// Namespaces left alone, with their blockers.
    pub blocked: Vec<NamespaceReadiness>,
    /// Why the MeshPolicy is not touched (legacy only), when it is not.
    pub mesh_note: Option<String>,
}

/// A 1.4 peer list that means STRICT.
fn strict_peers() -> Value {
    json!([{"mtls": {}}])
}

/// The kind, apiVersion and spec change that make one scope STRICT.
fn policy_kind(era: Era, mesh: bool) -> Kind {
    match (era, mesh) {
        (Era::Legacy, true) => Kind::MeshPolicy,
        (Era::Legacy, false) => Kind::Policy,
        (Era::Modern, _) => Kind::PeerAuthentication,
    }
}

/// `existing` (or a new `default`) made STRICT.
fn strictened(kind: Kind, version: &str, namespace: Option<&str>, existing: Option<&Obj>) -> Step {
    let api_version = format!("{}/{version}", kind.group());
    let Some(obj) = existing else {
        let mut metadata =
            json!({"name": NAME, "labels": {"app.kubernetes.io/managed-by": "meshvm"}});
        if let Some(ns) = namespace {
            metadata["namespace"] = json!(ns);
        }
        let spec = match kind {
            Kind::PeerAuthentication => json!({"mtls": {"mode": "STRICT"}}),
            _ => json!({"peers": strict_peers()}),
        };
        return Step {
            kind,
            object: json!({"apiVersion": api_version, "kind": kind.name(), "metadata": metadata, "spec": spec}),
            previous: None,
        };
    };
    let value = obj.to_value();
    let previous = restorable(&value);
    let mut object = previous.clone();
    if let Some(rv) = value.pointer("/metadata/resourceVersion") {
        object["metadata"]["resourceVersion"] = rv.clone();
    }
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    match kind {
        // Only the mode changes: a selector or port-level settings stay as they are.
        Kind::PeerAuthentication => object["spec"]["mtls"] = json!({"mode": "STRICT"}),
        // Peers are replaced; origins and principalBinding (end-user JWT) stay.
        _ => object["spec"]["peers"] = strict_peers(),
    }
    Step {
        kind,
        object,
        previous: Some(previous),
    }
}

/// An object as read, without what the API server sets: what a restore writes back.
fn restorable(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(key);
        }
    }
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
    }
    v
}

/// Plan the rollout (pure): `readiness` is the report's table, `only` the namespaces `-n`
/// named (empty: all), `version` the served version of the era's policy kind (`v1alpha1`, `v1`).
pub fn plan(
    ctx: &CheckContext,
    readiness: &[NamespaceReadiness],
    only: &[String],
    version: &str,
) -> Result<Rollout, Error> {
    let era = ctx.era.ok_or(Error::NoEra)?;
    for ns in only {
        if !readiness.iter().any(|r| &r.name == ns) {
            return Err(Error::UnknownNamespace {
                namespace: ns.clone(),
                known: readiness.iter().map(|r| r.name.clone()).collect(),
            });
        }
    }
    let mut rollout = Rollout::default();
    let kind = policy_kind(era, false);
    for row in readiness
        .iter()
        .filter(|r| only.is_empty() || only.contains(&r.name))
    {
        if !row.ready {
            rollout.blocked.push(row.clone());
            continue;
        }
        let mode = ctx.mesh.ns_mode(&row.name);
        // The namespace's own policy (whatever its name) is changed in place; one inherited
        // from the mesh is not the namespace's to change.
        let own = mode.by.filter(|o| o.namespace() == row.name);
        if mode.mode == PeerMode::Strict && own.is_some() {
            rollout.already.push(row.name.clone());
            continue;
        }
        rollout
            .steps
            .push(strictened(kind, version, Some(&row.name), own));
    }
    if era == Era::Legacy {
        let all_ready = !readiness.is_empty() && readiness.iter().all(|r| r.ready);
        let mesh = ctx.mesh.mesh_mode();
        rollout.mesh_note = if mesh.mode == PeerMode::Strict && mesh.by.is_some() {
            None
        } else if !only.is_empty() {
            Some("MeshPolicy default left as it is: -n narrowed the run".into())
        } else if !all_ready {
            Some("MeshPolicy default left as it is: not every namespace is ready".into())
        } else {
            rollout.steps.push(strictened(
                Kind::MeshPolicy,
                version,
                None,
                mesh.by.filter(|o| o.kind() == "MeshPolicy"),
            ));
            None
        };
    }
    Ok(rollout)
}

impl Rollout {
    /// The manifests, as `kubectl apply -f` takes them (no `resourceVersion`: GitOps commits them).
    pub fn manifests(&self) -> String {
        self.steps
            .iter()
            .map(|s| serde_saphyr::to_string(&restorable(&s.object)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// One row per step, one after another: creates never change an object that appeared
    /// meanwhile (unless it holds the same), replaces land only on the version read.
    pub fn rows(&self) -> Plan {
        let mut plan = Plan::default();
        for s in &self.steps {
            let (action, write) = match &s.previous {
                None => (
                    Action::Create,
                    Write::create(s.kind, s.object.clone()).same(Same::Contains),
                ),
                Some(_) => (
                    Action::Update,
                    Write::replace(s.kind, s.object.clone()).same(Same::Contains),
                ),
            };
            plan.push(
                Change::new(action, s.kind, s.namespace(), s.name())
                    .object(restorable(&s.object))
                    .write(write),
            );
        }
        plan.in_sequence();
        plan
    }

    /// What restores the state before this rollout.
    pub fn undo(&self, context: &str) -> Undo {
        let mut undo = Undo {
            kind: UNDO_KIND.into(),
            context: context.into(),
            restore: Vec::new(),
            delete: Vec::new(),
            written: Some(Vec::new()),
        };
        for s in &self.steps {
            match &s.previous {
                Some(previous) => undo.restore.push(previous.clone()),
                None => undo.delete.push(json!({
                    "apiVersion": s.object["apiVersion"],
                    "kind": s.kind.name(),
                    "metadata": {"name": s.name(), "namespace": s.namespace()},
                })),
            }
        }
        undo
    }

    /// The blocked namespaces and what blocks them, one line each.
    pub fn describe_blocked(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for r in &self.blocked {
            let _ = writeln!(out, "  {}: blocked by {}", r.name, r.blockers.join(", "));
        }
        out
    }
}

/// What `--undo-file` holds: the objects to put back as they were, and those to delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Undo {
    /// [`UNDO_KIND`].
    pub kind: String,
    /// The kubeconfig context it was written for.
    pub context: String,
    /// Objects the rollout replaced, as they were (spec, labels, annotations).
    pub restore: Vec<Value>,
    /// Objects the rollout created (apiVersion, kind, name, namespace).
    pub delete: Vec<Value>,
    /// What the rollout wrote, recorded after each write: the undo touches an object only while
    /// it is still this one. Absent in files written before this was recorded (their undo is
    /// not guarded, and says so); an object of `restore`/`delete` without a record here was
    /// not confirmed written (its write failed or the run was interrupted) and is left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<Vec<Written>>,
}

/// The version of one object as the rollout wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    /// `Policy`, `MeshPolicy`, `PeerAuthentication`.
    pub kind: String,
    /// Its namespace (none for the MeshPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// `metadata.uid` after the write.
    pub uid: String,
    /// `metadata.resourceVersion` after the write.
    pub resource_version: String,
}

/// An undo entry's kind, namespace and name.
fn coords(obj: &Value) -> (Kind, Option<String>, String) {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .and_then(Kind::from_name)
        .unwrap_or(Kind::Policy);
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    (kind, ns, name)
}

/// `Kind ns/name` (`Kind name` without a namespace), as plan rows name objects.
fn reference(kind: Kind, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The `kubectl get … -o yaml` that shows one object as it is now.
fn inspect(kind: Kind, version: &str, ns: Option<&str>, name: &str) -> String {
    let resource = Resource::new(kind, version).name();
    match ns {
        Some(ns) => format!(
            "kubectl get {resource} {} -n {} -o yaml",
            shell_word(name),
            shell_word(ns)
        ),
        None => format!("kubectl get {resource} {} -o yaml", shell_word(name)),
    }
}

impl Undo {
    /// Write to `path`, readable by its owner only (0600); an existing file is never replaced.
    pub fn write_new(&self, path: &Path) -> Result<(), Error> {
        let io = |action, source| Error::UndoIo {
            path: path.to_owned(),
            action,
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = match options.open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::UndoExists {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(io("cannot create the undo file", e)),
        };
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| io("cannot write the undo file", e))
    }

    /// Read and check an undo file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::UndoIo {
            path: path.to_owned(),
            action: "cannot read the undo file",
            source,
        })?;
        let invalid = |reason: String| Error::UndoInvalid {
            path: path.to_owned(),
            reason,
        };
        let undo: Undo = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if undo.kind != UNDO_KIND {
            return Err(invalid(format!("kind is {:?}, not {UNDO_KIND}", undo.kind)));
        }
        for obj in undo.restore.iter().chain(&undo.delete) {
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
            if !matches!(
                Kind::from_name(kind),
                Some(Kind::Policy | Kind::MeshPolicy | Kind::PeerAuthentication)
            ) {
                return Err(invalid(format!(
                    "{kind:?} is not a kind --fix --strict writes"
                )));
            }
            if obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_none()
            {
                return Err(invalid("an object without metadata.name".into()));
            }
        }
        Ok(undo)
    }

    /// Whether there is nothing to undo.
    pub fn is_empty(&self) -> bool {
        self.restore.is_empty() && self.delete.is_empty()
    }

    /// The record of what the rollout wrote to `kind ns/name`, if any.
    pub fn written_as(&self, kind: Kind, ns: Option<&str>, name: &str) -> Option<&Written> {
        self.written
            .as_ref()?
            .iter()
            .find(|w| w.kind == kind.name() && w.namespace.as_deref() == ns && w.name == name)
    }

    /// Replace the file at `path` with this undo, atomically (a sibling file, 0600, renamed
    /// over it): a reader sees the old or the new one, never half of one.
    pub fn rewrite(&self, path: &Path) -> Result<(), Error> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.meshvm-tmp"));
        let _ = std::fs::remove_file(&tmp);
        self.write_new(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|source| Error::UndoIo {
            path: path.to_owned(),
            action: "cannot replace the undo file",
            source,
        })
    }

    /// Drop the objects the rollout never sent a write for (a stopped rollout): nothing of
    /// theirs is to be undone.
    pub fn keep_only(&mut self, attempted: &[(Kind, Option<String>, String)]) {
        let keep = |obj: &Value| attempted.contains(&coords(obj));
        self.restore.retain(keep);
        self.delete.retain(keep);
    }

    /// The objects whose undo is not guarded by a recorded version (an undo file from before
    /// meshvm recorded them), as `Kind ns/name`.
    pub fn unguarded(&self) -> Vec<String> {
        if self.written.is_some() {
            return Vec::new();
        }
        self.restore
            .iter()
            .chain(&self.delete)
            .map(|o| {
                let (kind, ns, name) = coords(o);
                reference(kind, ns.as_deref(), &name)
            })
            .collect()
    }

    /// The writes that restore the state, one row per object: replaced objects back as they
    /// were, created ones deleted (one already gone counts as deleted). Each is guarded by the
    /// version recorded in [`Undo::written`]: a delete sends its `uid` and `resourceVersion` as
    /// preconditions (checked by the API server from Kubernetes 1.14 on:
    /// apiserver@kubernetes-1.14.0 pkg/storage/interfaces.go:97-139, the `resourceVersion` one
    /// new in 1.14, apimachinery@kubernetes-1.14.0 pkg/apis/meta/v1/types.go:574-581), a
    /// restore is a PUT carrying both (the `uid` in the body is a precondition too,
    /// pkg/registry/rest/update.go:175-190; the `resourceVersion` is the optimistic lock), so a
    /// 409 Conflict says someone changed or replaced it since. Objects without a record are
    /// returned apart (`left`): written by a file of this format, the rollout never confirmed
    /// writing them. A file from before the records (`written` absent) is undone unguarded,
    /// as it always was: a restore compares with what is stored now, a delete deletes it.
    pub fn rows(&self) -> (Plan, Vec<String>) {
        let mut plan = Plan::default();
        let mut left = Vec::new();
        for obj in &self.restore {
            let (kind, ns, name) = coords(obj);
            let write = match (&self.written, self.written_as(kind, ns.as_deref(), &name)) {
                (None, _) => Write::create_or_replace(kind, obj.clone()),
                (Some(_), Some(w)) => {
                    let mut guarded = obj.clone();
                    guarded["metadata"]["resourceVersion"] = json!(w.resource_version);
                    guarded["metadata"]["uid"] = json!(w.uid);
                    Write::replace(kind, guarded)
                }
                (Some(_), None) => {
                    left.push(reference(kind, ns.as_deref(), &name));
                    continue;
                }
            };
            plan.push(
                Change::new(Action::Update, kind, ns.as_deref(), &name)
                    .object(obj.clone())
                    .write(write.same(Same::Fields(&["spec"]))),
            );
        }
        for obj in &self.delete {
            let (kind, ns, name) = coords(obj);
            let mut write = Write::delete(Resource::of(kind, obj));
            match (&self.written, self.written_as(kind, ns.as_deref(), &name)) {
                (None, _) => {}
                (Some(_), Some(w)) => {
                    write = write.precondition(Precondition::Exactly {
                        uid: w.uid.clone(),
                        resource_version: w.resource_version.clone(),
                    });
                }
                (Some(_), None) => {
                    left.push(reference(kind, ns.as_deref(), &name));
                    continue;
                }
            }
            plan.push(Change::new(Action::Delete, kind, ns.as_deref(), &name).write(write));
        }
        (plan, left)
    }

    /// The `kubectl get … -o yaml` of the object of a plan row, to inspect it.
    fn inspect(&self, change: &Change) -> String {
        let version = self
            .restore
            .iter()
            .chain(&self.delete)
            .find(|o| coords(o) == (change.kind, change.namespace.clone(), change.name.clone()))
            .map(|o| Resource::of(change.kind, o).version)
            .unwrap_or_default();
        inspect(
            change.kind,
            &version,
            change.namespace.as_deref(),
            &change.name,
        )
    }
}

/// A word for the shell: as is when safe, else single-quoted.
pub fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=%+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\"'\"'"))
    }
}

/// `-n a,b` as the namespaces `--strict` is limited to.
pub fn namespaces_flag(value: Option<&str>) -> Vec<String> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The object of `write` as stored now, if any (a read through the connection's retries).
async fn read_back(
    conn: &Connection,
    kind: Kind,
    object: &Value,
) -> Result<Option<Value>, crate::kube::Error> {
    let resource = Resource::of(kind, object);
    let ar = resource.api_resource();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let api: ::kube::Api<::kube::core::DynamicObject> = match ns {
        Some(ns) => ::kube::Api::namespaced_with(conn.client.clone(), ns, &ar),
        None => ::kube::Api::all_with(conn.client.clone(), &ar),
    };
    let mut action = crate::kube::Request::new("get", resource.name()).name(name);
    if let Some(ns) = ns {
        action = action.ns(ns);
    }
    match conn.call(action, || api.get(name)).await {
        Ok(o) => Ok(serde_json::to_value(o).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the rollout needs besides the plan.
pub(super) struct Apply<'a> {
    /// The run's options.
    pub opts: &'a super::DoctorOptions,
    /// The cluster.
    pub conn: &'a Connection,
    /// `--prometheus`, for `--wait`.
    pub prometheus: Option<&'a super::traffic::Client>,
}

impl Apply<'_> {
    /// The command that undoes what the rollout applied, as it runs as printed.
    fn undo_command(&self, path: &Path) -> String {
        let hint = format!(
            "`kubectl meshvm doctor --fix --undo {}`",
            shell_word(&path.to_string_lossy())
        );
        as_run(self.opts, &hint).trim_matches('`').to_string()
    }

    /// Write the undo file (before any write), then each step in turn: after each, record the
    /// version it wrote in the undo file, and with `--wait` check its namespace again before
    /// the next. A stop (a failed write, an unhealthy namespace) leaves the rest unsent, the
    /// undo file holding only what was sent, and the table saying which is which.
    pub(super) async fn run(
        &self,
        rollout: &Rollout,
        err: &mut impl std::io::Write,
    ) -> Result<(), super::Error> {
        let conn = self.conn;
        // With --wait and --prometheus: how long a fresh answer takes, known before anything
        // is written (a rollout that could never see a namespace healthy does not start).
        let scrape = match (self.opts.wait, self.prometheus) {
            (Some(timeout), Some(client)) => {
                let (interval, why) = client
                    .scrape_interval()
                    .await
                    .map_err(|why| Error::WaitNoInterval { why })?;
                if !timeout.is_zero() && timeout < interval * 2 {
                    return Err(Error::WaitTimeoutTooShort {
                        timeout: humantime(timeout),
                        interval: humantime(interval),
                        settle: humantime(interval * 2),
                        why,
                    }
                    .into());
                }
                Some((interval, why))
            }
            _ => None,
        };
        let mut undo = rollout.undo(&conn.context);
        let path = self.opts.undo_file.as_deref();
        if let Some(path) = path {
            undo.write_new(path)?;
            let _ = writeln!(
                err,
                "--fix --strict: wrote the undo to {}; `{}` applies it",
                shell_word(&path.to_string_lossy()),
                self.undo_command(path)
            );
        }
        let mut plan = rollout.rows();
        let mut stop: Option<super::Error> = None;
        // The row whose write the API server refused, when one was.
        let mut unwritten: Option<usize> = None;
        for (i, step) in rollout.steps.iter().enumerate() {
            let mut one = Plan {
                changes: vec![plan.changes[i].clone()],
            };
            let result =
                crate::plan::write::execute(conn, &mut one, crate::flags::DryRun::None).await;
            let written_at = Instant::now();
            plan.changes[i] = one.changes.remove(0);
            if let Err(failure) = result {
                // Refused by the API server (a 4xx: forbidden, invalid, conflict) or lost to
                // someone else's object: nothing of the rollout's was stored. A timeout, a
                // 5xx or a broken connection may have stored it: its entry stays (unrecorded).
                let refused = match &failure.error {
                    crate::plan::write::Error::Kube(e) => e
                        .code()
                        .is_some_and(|c| (400..500).contains(&c) && c != 408),
                    crate::plan::write::Error::Raced { .. }
                    | crate::plan::write::Error::Invalid { .. } => true,
                };
                if refused {
                    unwritten = Some(i);
                }
                stop = Some(super::fix_error(failure.error));
                break;
            }
            // What was written, as the API server stores it: its uid and resourceVersion guard
            // the undo. Read back at once; if it no longer holds what was written, someone
            // changed it already and it is not recorded (the undo then leaves it alone).
            if let Some(written) = undo.written.as_mut() {
                match read_back(conn, step.kind, &step.object).await {
                    Ok(Some(stored))
                        if crate::plan::write::contains(&stored, &restorable(&step.object)) =>
                    {
                        let meta = |k: &str| {
                            stored
                                .pointer(&format!("/metadata/{k}"))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned()
                        };
                        written.push(Written {
                            kind: step.kind.name().into(),
                            namespace: step.namespace().map(str::to_owned),
                            name: step.name().into(),
                            uid: meta("uid"),
                            resource_version: meta("resourceVersion"),
                        });
                    }
                    Ok(_) => {
                        let _ = writeln!(
                            err,
                            "--fix --strict: {} changed right after it was written: not recorded in the undo, which will leave it alone",
                            plan.changes[i].reference()
                        );
                    }
                    Err(e) => {
                        stop = Some(e.into());
                        break;
                    }
                }
                if let Some(path) = path {
                    undo.rewrite(path)?;
                }
            }
            if let (Some(timeout), Some(ns)) = (self.opts.wait, step.namespace())
                && let Err(why) = self
                    .wait_healthy(ns, written_at, timeout, scrape.as_ref(), err)
                    .await
            {
                let applied: Vec<String> =
                    plan.changes[..=i].iter().map(Change::reference).collect();
                let not_applied: Vec<String> = plan.changes[i + 1..]
                    .iter()
                    .map(Change::reference)
                    .collect();
                stop = Some(
                    Error::WaitStopped {
                        namespace: ns.to_owned(),
                        why,
                        applied,
                        not_applied,
                        undo: path.map(|p| self.undo_command(p)).unwrap_or_default(),
                    }
                    .into(),
                );
                break;
            }
        }
        if stop.is_some() {
            plan.abandon_rest();
            // The undo holds only what may have been written: objects never sent, or refused,
            // have nothing to undo.
            if let Some(path) = path {
                let attempted: Vec<(Kind, Option<String>, String)> = plan
                    .changes
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| {
                        matches!(c.state, State::Done | State::Failed) && unwritten != Some(*i)
                    })
                    .map(|(_, c)| (c.kind, c.namespace.clone(), c.name.clone()))
                    .collect();
                undo.keep_only(&attempted);
                undo.rewrite(path)?;
            }
        }
        let _ = plan.write(err, crate::flags::OutputFormat::Table, false);
        stop.map_or(Ok(()), Err)
    }

    /// `--wait` for one namespace made STRICT at `written_at`: until a fresh run of the checks
    /// finds it ready and, with `--prometheus`, Prometheus shows no plaintext into it since —
    /// asked only after two scrape intervals, so at least one whole interval of traffic sent
    /// after the change has been scraped. A failing check or new plaintext ends the wait at
    /// once; no answer (the cluster or Prometheus unreachable, no Istio series) is asked again
    /// until `timeout` (zero: no limit). The reason it is not healthy, if it is not.
    async fn wait_healthy(
        &self,
        ns: &str,
        written_at: Instant,
        timeout: Duration,
        scrape: Option<&(Duration, String)>,
        err: &mut impl std::io::Write,
    ) -> Result<(), String> {
        let deadline = (!timeout.is_zero()).then(|| written_at + timeout);
        let limit = humantime(timeout);
        let (settle, every) = if let Some((interval, why)) =
            scrape.filter(|_| self.prometheus.is_some())
        {
            let interval = *interval;
            let _ = writeln!(
                err,
                "--fix --strict --wait: {ns}: STRICT; checking it again, and asking Prometheus for plaintext into it since, after two scrape intervals ({}, {why}); at most {limit}",
                humantime(interval)
            );
            (interval * 2, interval.max(Duration::from_secs(1)))
        } else {
            let _ = writeln!(
                err,
                "--fix --strict --wait: {ns}: STRICT; checking it again (no --prometheus: doctor's checks only); at most {limit}"
            );
            (Duration::ZERO, Duration::from_secs(2))
        };
        let pause = |d: Duration| async move {
            let d = match deadline {
                Some(end) => d.min(end.saturating_duration_since(Instant::now())),
                None => d,
            };
            tokio::time::sleep(d).await;
        };
        pause(settle.saturating_sub(written_at.elapsed())).await;
        loop {
            let pending = match self.observe(ns, written_at, settle).await {
                Ok(None) => {
                    let _ = writeln!(
                        err,
                        "--fix --strict --wait: {ns}: healthy {} after it was made STRICT",
                        humantime(written_at.elapsed())
                    );
                    return Ok(());
                }
                Ok(Some(pending)) => pending,
                Err(unhealthy) => return Err(unhealthy),
            };
            if deadline.is_some_and(|end| Instant::now() >= end) {
                return Err(format!("no healthy observation within {limit} ({pending})"));
            }
            let _ = writeln!(err, "--fix --strict --wait: {ns}: waiting: {pending}");
            pause(every).await;
        }
    }

    /// One fresh observation of `ns`: `Ok(None)` healthy, `Ok(Some(why))` not known yet,
    /// `Err(why)` unhealthy.
    async fn observe(
        &self,
        ns: &str,
        written_at: Instant,
        settle: Duration,
    ) -> Result<Option<String>, String> {
        let opts = self.opts;
        let snap =
            match Snapshot::observe_in(self.conn, opts.checks.istio_namespace.as_deref()).await {
                Ok(snap) => snap,
                Err(e) => return Ok(Some(format!("cannot read the cluster: {e}"))),
            };
        let report = super::run_all(std::slice::from_ref(&snap), &opts.checks);
        if let Some(row) = report.namespaces.iter().find(|r| r.name == ns)
            && !row.ready
        {
            let failing: Vec<String> = report
                .findings
                .iter()
                .filter(|f| {
                    f.severity == super::Severity::Fail
                        && (f.namespaces.is_empty() || f.namespaces.iter().any(|n| n == ns))
                })
                .map(|f| format!("{}: {}", f.check, f.message))
                .collect();
            return Err(format!(
                "doctor's checks now fail for it: {}",
                failing.join("; ")
            ));
        }
        let Some(client) = self.prometheus else {
            return Ok(None);
        };
        if written_at.elapsed() < settle {
            return Ok(Some(format!(
                "two scrape intervals ({}) have not passed since",
                humantime(settle)
            )));
        }
        match client.istio_series_now().await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Some(format!(
                    "no evidence: Prometheus at {} holds no Istio series now",
                    client.options().url
                )));
            }
            Err(why) => return Ok(Some(format!("no evidence: {why}"))),
        }
        match client.plaintext_since(ns, written_at.elapsed()).await {
            Ok(flows) if flows.is_empty() => Ok(None),
            Ok(flows) => Err(format!(
                "plaintext into it since it was made STRICT: {}",
                flows
                    .iter()
                    .map(|f| format!(
                        "{}/{} → {}/{} ({:.0} {}, connection_security_policy={})",
                        f.source_namespace,
                        f.source_workload,
                        f.dest_namespace,
                        f.dest_workload,
                        f.count,
                        if f.tcp { "TCP connections" } else { "requests" },
                        f.policy
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Err(why) => Ok(Some(format!("no evidence: {why}"))),
        }
    }
}

/// `hint`'s backticked commands as they run as printed after this run: with its connection
/// flags (`--context`, `--kubeconfig`), and `--yes` on a `doctor --fix` when there is no
/// terminal to confirm on.
fn as_run(opts: &super::DoctorOptions, hint: &str) -> String {
    let mut hint = hint.to_string();
    if let super::Source::Live(contexts) = &opts.source
        && let [context] = contexts.as_slice()
    {
        hint = super::hint_for_context(&hint, context);
    }
    if let Some(kubeconfig) = &opts.kube.kubeconfig {
        hint = super::hint_with_flag(&hint, "--kubeconfig", &kubeconfig.to_string_lossy());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        hint = super::fix_for_scripts(&hint);
    }
    hint
}

/// `1.5s`, `2m`, `no limit` (zero).
fn humantime(d: Duration) -> String {
    if d.is_zero() {
        "no limit".into()
    } else if d.subsec_millis() != 0 && d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else if d.as_secs().is_multiple_of(60) {
        format!("{}m", d.as_secs() / 60)
    } else {
        format!("{}s", d.as_secs())
    }
}

/// `--fix --undo FILE`: put back what `--fix --strict` replaced and delete what it created,
/// each only while it is still as the rollout wrote it. Objects refused (changed since, or not
/// recorded as written) are named with how to inspect them and left alone; the rest is still
/// undone, and the run exits 1.
pub(super) async fn undo(
    opts: &super::DoctorOptions,
    path: &Path,
    err: &mut impl std::io::Write,
) -> Result<crate::errors::Outcome, super::Error> {
    use crate::errors::Outcome;
    let undo = Undo::read(path)?;
    let context = match &opts.source {
        super::Source::Live(contexts) => contexts.first().map(String::as_str),
        _ => None,
    };
    let conn = crate::kube::connect(&opts.kube, context).await?;
    if undo.context != conn.context {
        return Err(Error::UndoContext {
            path: path.to_owned(),
            written: undo.context,
            current: conn.context.clone(),
        }
        .into());
    }
    if undo.is_empty() {
        let _ = writeln!(err, "--fix --undo: nothing to undo");
        return Ok(Outcome::Success);
    }
    let unguarded = undo.unguarded();
    if !unguarded.is_empty() {
        let _ = writeln!(
            err,
            "--fix --undo: {} records no versions of what the rollout wrote (an undo file of meshvm before they were recorded): not guarded, so {} is replaced or deleted as it is now",
            shell_word(&path.to_string_lossy()),
            unguarded.join(", ")
        );
    }
    let (mut plan, left) = undo.rows();
    let what = format!(
        "restore {} and delete {} policy object(s) in context {}",
        plan.changes
            .iter()
            .filter(|c| c.action == Action::Update)
            .count(),
        plan.changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .count(),
        conn.context
    );
    let mut refused: Vec<String> = left
        .iter()
        .map(|r| {
            format!(
                "{r}: the rollout did not record writing it (its write failed, or the run was interrupted): left as it is"
            )
        })
        .collect();
    if opts.dry_run.is_dry() {
        let result = crate::plan::write::execute(&conn, &mut plan, opts.dry_run).await;
        let _ = writeln!(err, "--fix --undo (dry run): would {what}");
        let _ = plan.write(err, crate::flags::OutputFormat::Table, false);
        result.map_err(|failure| super::fix_error(failure.error))?;
    } else if crate::terminal::confirm(&what, opts.yes)? {
        // One object at a time: one refused does not stop the others.
        let mut stop = None;
        for i in 0..plan.changes.len() {
            let mut one = Plan {
                changes: vec![plan.changes[i].clone()],
            };
            let result =
                crate::plan::write::execute(&conn, &mut one, crate::flags::DryRun::None).await;
            plan.changes[i] = one.changes.remove(0);
            match result {
                Ok(()) => {}
                Err(crate::plan::write::Failure {
                    error: crate::plan::write::Error::Raced { .. },
                    ..
                }) => {
                    let change = plan.changes[i].clone();
                    let recorded = undo
                        .written_as(change.kind, change.namespace.as_deref(), &change.name)
                        .map(|w| {
                            format!(" (uid {}, resourceVersion {})", w.uid, w.resource_version)
                        })
                        .unwrap_or_default();
                    plan.changes[i].detail = "changed since the rollout wrote it".into();
                    refused.push(format!(
                        "{}: changed or replaced since the rollout wrote it{recorded}: left as it is; inspect it with `{}` and restore or delete it yourself if it should go",
                        change.reference(),
                        undo.inspect(&change)
                    ));
                }
                Err(failure) => {
                    plan.abandon_rest();
                    stop = Some(super::fix_error(failure.error));
                    break;
                }
            }
        }
        let _ = plan.write(err, crate::flags::OutputFormat::Table, false);
        if let Some(e) = stop {
            return Err(e);
        }
    } else {
        return Ok(Outcome::Success);
    }
    if refused.is_empty() {
        return Ok(Outcome::Success);
    }
    for r in &refused {
        let _ = writeln!(err, "--fix --undo: refused {}", as_run(opts, r));
    }
    Ok(Outcome::Findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testutil::Fixture;
    use crate::doctor::{CheckOptions, run_all};

    const SHOP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n";
    const PILOT_DR: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: meshexpansion-dr-pilot, namespace: istio-system}\nspec: {host: istio-pilot.istio-system.svc.cluster.local, trafficPolicy: {portLevelSettings: [{port: {number: 15011}, tls: {mode: DISABLE}}]}}\n";
    const BLOCKED: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\nspec: {host: reviews, trafficPolicy: {tls: {mode: DISABLE}}}\n";

    fn rollout(f: &Fixture, only: &[&str]) -> Result<Rollout, Error> {
        let snap = f.snapshot();
        let opts = CheckOptions::default();
        let report = run_all(std::slice::from_ref(&snap), &opts);
        let ctx = CheckContext::new(&snap, &opts, vec![]);
        let only: Vec<String> = only.iter().map(|s| (*s).to_string()).collect();
        let version = if ctx.era == Some(Era::Legacy) {
            "v1alpha1"
        } else {
            "v1"
        };
        plan(&ctx, &report.namespaces, &only, version)
    }

    /// Istio 1.4 with the DestinationRules STRICT needs and namespace `shop` ready for it.
    fn shop_ready() -> Fixture {
        Fixture::legacy()
            .with_default_dr()
            .with_citadel_dr()
            .with(PILOT_DR)
            .with(SHOP)
    }

    fn targets(r: &Rollout) -> Vec<String> {
        r.steps
            .iter()
            .map(|s| format!("{} {}/{}", s.kind, s.namespace().unwrap_or("-"), s.name()))
            .collect()
    }

    #[test]
    fn only_ready_namespaces_and_blocked_ones_are_named() {
        let f = shop_ready().with(BLOCKED);
        let r = rollout(&f, &[]).unwrap();
        let t = targets(&r);
        assert!(
            t.contains(&"Policy shop/default".to_string()),
            "{t:?} {:?}",
            r.blocked
        );
        assert!(!t.iter().any(|t| t.contains("bookinfo")), "{t:?}");
        let blocked: Vec<&str> = r.blocked.iter().map(|b| b.name.as_str()).collect();
        assert!(blocked.contains(&"bookinfo"), "{blocked:?}");
        assert!(
            r.describe_blocked()
                .contains("bookinfo: blocked by mtls.dr-conflict")
        );
        // bookinfo blocks: the MeshPolicy stays.
        assert!(!t.iter().any(|t| t.starts_with("MeshPolicy")), "{t:?}");
        assert!(
            r.mesh_note
                .as_deref()
                .unwrap()
                .contains("not every namespace")
        );
        let shop = &r
            .steps
            .iter()
            .find(|s| s.namespace() == Some("shop"))
            .unwrap();
        assert_eq!(
            shop.object["apiVersion"],
            "authentication.istio.io/v1alpha1"
        );
        assert_eq!(shop.object["spec"], json!({"peers": [{"mtls": {}}]}));
        assert!(shop.previous.is_none());
    }

    #[test]
    fn the_mesh_policy_goes_strict_only_when_every_namespace_is_ready() {
        let f = shop_ready();
        let r = rollout(&f, &[]).unwrap();
        assert!(r.blocked.is_empty(), "{:?}", r.blocked);
        let mesh = r
            .steps
            .iter()
            .find(|s| s.kind == Kind::MeshPolicy)
            .expect("MeshPolicy");
        assert_eq!(mesh.object["spec"]["peers"], json!([{"mtls": {}}]));
        assert!(mesh.namespace().is_none());
        // -n narrows the run: the MeshPolicy is not its to change.
        let r = rollout(&f, &["shop"]).unwrap();
        assert!(!r.steps.iter().any(|s| s.kind == Kind::MeshPolicy));
        assert!(r.mesh_note.unwrap().contains("-n narrowed"));
    }

    #[test]
    fn n_limits_and_unknown_names_are_refused() {
        let f = shop_ready().with(BLOCKED);
        let r = rollout(&f, &["bookinfo"]).unwrap();
        assert!(r.steps.is_empty());
        assert_eq!(r.blocked.len(), 1);
        let e = rollout(&f, &["nope"]).unwrap_err();
        assert!(e.to_string().contains("-n nope"), "{e}");
        assert_eq!(namespaces_flag(Some("a, b,,c")), ["a", "b", "c"]);
        assert!(namespaces_flag(None).is_empty());
    }

    #[test]
    fn modern_writes_peer_authentication_and_replaces_a_permissive_one_in_place() {
        let pa = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: loose, namespace: shop, resourceVersion: '7', labels: {team: a}}\nspec: {mtls: {mode: PERMISSIVE}}\n";
        let f = Fixture::modern().with(SHOP).with(pa);
        let r = rollout(&f, &["shop"]).unwrap();
        assert_eq!(targets(&r), ["PeerAuthentication shop/loose"]);
        let step = &r.steps[0];
        assert_eq!(step.object["spec"]["mtls"]["mode"], "STRICT");
        assert_eq!(step.object["metadata"]["resourceVersion"], "7");
        let previous = step.previous.as_ref().unwrap();
        assert_eq!(previous["spec"]["mtls"]["mode"], "PERMISSIVE");
        assert!(previous.pointer("/metadata/resourceVersion").is_none());
        let undo = r.undo("ctx");
        assert_eq!(undo.restore, std::slice::from_ref(previous));
        assert!(undo.delete.is_empty());
        let rows = r.rows();
        assert_eq!(rows.changes[0].words(), "would update");
        // The manifests carry no resourceVersion.
        assert!(
            !r.manifests().contains("resourceVersion"),
            "{}",
            r.manifests()
        );
    }

    #[test]
    fn flags_n_is_a_list_with_strict_and_undo_goes_alone() {
        use clap::Parser as _;
        let parse = |argv: &[&str]| {
            let mut full = vec!["kubectl-meshvm-doctor"];
            full.extend_from_slice(argv);
            crate::args::DoctorArgs::try_parse_from(full)
                .map_err(|e| e.to_string())
                .and_then(|a| crate::doctor::DoctorOptions::resolve(a).map_err(|e| e.to_string()))
        };
        let o = parse(&["--fix", "--strict", "-n", "shop,pay"]).unwrap();
        assert_eq!(o.strict_namespaces, ["shop", "pay"]);
        assert_eq!(o.kube.namespace, None, "not the connection's namespace");
        assert!(parse(&["--strict"]).is_err(), "--strict needs --fix");
        assert!(
            parse(&["--fix", "--undo-file", "u"]).is_err(),
            "needs --strict"
        );
        assert!(parse(&["--fix", "--strict", "--undo", "u"]).is_err());
        let o = parse(&["--fix", "--undo", "u", "--dry-run=server"]).unwrap();
        assert_eq!(o.undo.as_deref(), Some(Path::new("u")));
    }

    #[test]
    fn a_strict_namespace_gets_nothing() {
        let pa = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n";
        let f = Fixture::modern().with(SHOP).with(pa);
        let r = rollout(&f, &["shop"]).unwrap();
        assert!(r.steps.is_empty(), "{:?}", targets(&r));
        assert_eq!(r.already, ["shop"]);
    }

    #[test]
    fn undo_round_trips_and_refuses_what_it_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.json");
        let mut undo = Undo {
            kind: UNDO_KIND.into(),
            context: "c".into(),
            restore: vec![
                json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "MeshPolicy", "metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {"mode": "PERMISSIVE"}}]}}),
            ],
            delete: vec![
                json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "Policy", "metadata": {"name": "default", "namespace": "shop"}}),
            ],
            written: Some(vec![Written {
                kind: "Policy".into(),
                namespace: Some("shop".into()),
                name: "default".into(),
                uid: "u-1".into(),
                resource_version: "42".into(),
            }]),
        };
        undo.write_new(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            undo.write_new(&path),
            Err(Error::UndoExists { .. })
        ));
        assert_eq!(Undo::read(&path).unwrap(), undo);
        // Guarded: the delete carries the recorded uid and resourceVersion; the MeshPolicy has
        // no record (never confirmed written), so it is left alone.
        let (rows, left) = undo.rows();
        assert_eq!(rows.changes.len(), 1);
        assert_eq!(rows.changes[0].words(), "would delete");
        assert_eq!(
            rows.changes[0].write.as_ref().unwrap().precondition,
            Precondition::Exactly {
                uid: "u-1".into(),
                resource_version: "42".into()
            }
        );
        assert_eq!(left, ["MeshPolicy default"]);
        assert!(undo.unguarded().is_empty());
        // A restore with a record is a PUT guarded by it.
        undo.written.as_mut().unwrap().push(Written {
            kind: "MeshPolicy".into(),
            namespace: None,
            name: "default".into(),
            uid: "u-2".into(),
            resource_version: "43".into(),
        });
        let (rows, left) = undo.rows();
        assert!(left.is_empty());
        let put = rows.changes[0].write.as_ref().unwrap();
        assert_eq!(put.precondition, Precondition::ResourceVersion("43".into()));
        assert_eq!(put.object["metadata"]["uid"], "u-2");
        // Rewritten in place (0600), atomically.
        undo.rewrite(&path).unwrap();
        assert_eq!(Undo::read(&path).unwrap(), undo);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only what was attempted stays.
        let mut kept = undo.clone();
        kept.keep_only(&[(Kind::Policy, Some("shop".into()), "default".into())]);
        assert!(kept.restore.is_empty() && kept.delete.len() == 1);
        // A file from before the records: accepted, unguarded, and it says which.
        std::fs::write(&path, r#"{"kind":"MeshvmStrictUndo","context":"c","restore":[],"delete":[{"apiVersion":"authentication.istio.io/v1alpha1","kind":"Policy","metadata":{"name":"default","namespace":"shop"}}]}"#).unwrap();
        let old = Undo::read(&path).unwrap();
        assert_eq!(old.written, None);
        assert_eq!(old.unguarded(), ["Policy shop/default"]);
        let (rows, left) = old.rows();
        assert!(left.is_empty());
        assert_eq!(
            rows.changes[0].write.as_ref().unwrap().precondition,
            Precondition::None
        );
        std::fs::write(&path, r#"{"kind":"MeshvmStrictUndo","context":"c","restore":[{"kind":"Secret","metadata":{"name":"x"}}],"delete":[]}"#).unwrap();
        assert!(
            Undo::read(&path)
                .unwrap_err()
                .to_string()
                .contains("\"Secret\" is not a kind")
        );
    }
}
