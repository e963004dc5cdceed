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

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::CheckContext;
use super::mesh::PeerMode;
use super::report::NamespaceReadiness;
use crate::istio::Era;
use crate::plan::write::{Kind, Resource, Same, Write};
use crate::plan::{Action, Change, Plan};
use crate::snapshot::Obj;

/// The name of the objects the rollout creates (Istio's own convention for namespace- and
/// mesh-wide policy).
pub const NAME: &str = "default";

/// What the undo file says it is.
pub const UNDO_KIND: &str = "MeshvmStrictUndo";

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
        })
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

    /// The writes that restore the state: replaced objects back as they were (a create if it
    /// was deleted meanwhile), created ones deleted (one already gone counts as deleted).
    pub fn rows(&self) -> Plan {
        let mut plan = Plan::default();
        let coords = |obj: &Value| {
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
        };
        for obj in &self.restore {
            let (kind, ns, name) = coords(obj);
            plan.push(
                Change::new(Action::Update, kind, ns.as_deref(), &name)
                    .object(obj.clone())
                    .write(
                        Write::create_or_replace(kind, obj.clone()).same(Same::Fields(&["spec"])),
                    ),
            );
        }
        for obj in &self.delete {
            let (kind, ns, name) = coords(obj);
            plan.push(
                Change::new(Action::Delete, kind, ns.as_deref(), &name)
                    .write(Write::delete(Resource::of(kind, obj))),
            );
        }
        plan.in_sequence();
        plan
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

    fn targets(r: &Rollout) -> Vec<String> {
        r.steps
            .iter()
            .map(|s| format!("{} {}/{}", s.kind, s.namespace().unwrap_or("-"), s.name()))
            .collect()
    }

    #[test]
    fn only_ready_namespaces_and_blocked_ones_are_named() {
        let f = Fixture::legacy()
            .with_default_dr()
            .with_citadel_dr()
            .with(PILOT_DR)
            .with(SHOP)
            .with(BLOCKED);
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
        let f = Fixture::legacy()
            .with_default_dr()
            .with_citadel_dr()
            .with(PILOT_DR)
            .with(SHOP);
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
        let f = Fixture::legacy()
            .with_default_dr()
            .with_citadel_dr()
            .with(PILOT_DR)
            .with(SHOP)
            .with(BLOCKED);
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
        let undo = Undo {
            kind: UNDO_KIND.into(),
            context: "c".into(),
            restore: vec![
                json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "MeshPolicy", "metadata": {"name": "default"}, "spec": {"peers": [{"mtls": {"mode": "PERMISSIVE"}}]}}),
            ],
            delete: vec![
                json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "Policy", "metadata": {"name": "default", "namespace": "shop"}}),
            ],
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
        let rows = undo.rows();
        assert_eq!(rows.changes.len(), 2);
        assert_eq!(rows.changes[1].words(), "would delete");
        std::fs::write(&path, r#"{"kind":"MeshvmStrictUndo","context":"c","restore":[{"kind":"Secret","metadata":{"name":"x"}}],"delete":[]}"#).unwrap();
        assert!(
            Undo::read(&path)
                .unwrap_err()
                .to_string()
                .contains("\"Secret\" is not a kind")
        );
    }
}
