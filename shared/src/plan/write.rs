//! Every cluster write meshvm makes, typed, and the one executor that sends them.
//!
//! A verb plans rows ([`Change`]s of a [`Plan`]); a row that changes the cluster carries a
//! [`Write`]: which resource ([`Resource`]: kind, group/version/plural, scope — the version is
//! the one the object itself carries), how ([`Verb`]: apply, create, replace guarded by
//! `resourceVersion`, patch, delete), the object, and what must hold first ([`Precondition`]).
//! [`execute`] sends them and owns, once for every verb:
//!
//! - `--dry-run`: client sends nothing; server sends every write with `dryRun=All`;
//! - retries: every request goes through [`Connection::call`] (429/5xx/resets, `Retry-After`);
//! - order: rows go out in waves, a namespace before what goes into it and a row after the rows
//!   it names ([`Write::after`]); independent rows of a wave are sent together;
//! - the what-was-written table: each row ends done, failed or not attempted, and its action says
//!   what really happened (created, updated or unchanged) when the server's answer proves it;
//! - the version fallback: server-side apply where the server takes it, else create/update.
//!
//! ## Server-side apply, and the fallback for Kubernetes before 1.16
//! [`Verb::Apply`] is a server-side apply (`PATCH`, `application/apply-patch+yaml`, field manager
//! `meshvm`, `force`). Before 1.16 the API server refuses that media type with 415
//! UnsupportedMediaType: its PATCH route lists only json-patch, merge-patch and strategic-merge-patch
//! unless the alpha `ServerSideApply` gate is on (apiserver@kubernetes-1.14.0
//! pkg/endpoints/installer.go:714-720), and the handler checks the content type before anything
//! else (pkg/endpoints/handlers/patch.go:79-80, message from
//! pkg/endpoints/handlers/negotiation/errors.go:61). On that answer the executor remembers, for the
//! rest of the run on that [`Connection`], that the server does not take apply, and writes the same
//! object by GET → (absent: POST; AlreadyExists: read again) / (present: lay meshvm's fields over
//! what is stored, "unchanged" when that changes nothing, else PUT with the `resourceVersion` read,
//! read again on 409 Conflict), a bounded number of rounds. Labels, annotations and every other map
//! meshvm sets are merged into the stored object, so fields other managers own stay, as server-side
//! apply keeps them; lists and scalars meshvm sets replace what is stored, and the paths a write
//! names as [`Write::owning`] are set exactly (removed when meshvm no longer sets them).

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use ::kube::Client;
use ::kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use ::kube::client::Body;
use ::kube::core::{ApiResource, DynamicObject, GroupVersionKind, Resource as _, Status};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::flags::DryRun;
use crate::kube::{Connection, FIELD_MANAGER, Request};
use crate::plan::{Action, Change, Plan, State};

/// How many read-compare-write rounds an apply without server-side apply tries before it gives
/// up on an object other clients keep changing.
pub const MAX_UPDATE_ROUNDS: u32 = 8;

/// A kind meshvm writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// core/v1 Namespace (cluster-scoped).
    Namespace,
    /// core/v1 ServiceAccount.
    ServiceAccount,
    /// core/v1 Secret.
    Secret,
    /// core/v1 Service.
    Service,
    /// core/v1 Endpoints.
    Endpoints,
    /// apps/v1 Deployment.
    Deployment,
    /// networking.istio.io WorkloadGroup.
    WorkloadGroup,
    /// networking.istio.io WorkloadEntry.
    WorkloadEntry,
    /// networking.istio.io DestinationRule.
    DestinationRule,
    /// networking.istio.io ServiceEntry.
    ServiceEntry,
    /// security.istio.io PeerAuthentication (modern; doctor's `--fix --strict`).
    PeerAuthentication,
    /// authentication.istio.io Policy (Istio 1.4; doctor's `--fix --strict`).
    Policy,
    /// authentication.istio.io MeshPolicy (Istio 1.4, cluster-scoped; doctor's `--fix --strict`).
    MeshPolicy,
}

impl Kind {
    /// Every kind, for lookups by name.
    pub const ALL: [Kind; 13] = [
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::Service,
        Kind::Endpoints,
        Kind::Deployment,
        Kind::WorkloadGroup,
        Kind::WorkloadEntry,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::PeerAuthentication,
        Kind::Policy,
        Kind::MeshPolicy,
    ];

    /// `Secret`, as objects and tables name it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Deployment => "Deployment",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Policy => "Policy",
            Kind::MeshPolicy => "MeshPolicy",
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace
            | Kind::ServiceAccount
            | Kind::Secret
            | Kind::Service
            | Kind::Endpoints => "",
            Kind::Deployment => "apps",
            Kind::WorkloadGroup
            | Kind::WorkloadEntry
            | Kind::DestinationRule
            | Kind::ServiceEntry => "networking.istio.io",
            Kind::PeerAuthentication => "security.istio.io",
            Kind::Policy | Kind::MeshPolicy => "authentication.istio.io",
        }
    }

    /// The plural resource name in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Secret => "secrets",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::Deployment => "deployments",
            Kind::WorkloadGroup => "workloadgroups",
            Kind::WorkloadEntry => "workloadentries",
            Kind::DestinationRule => "destinationrules",
            Kind::ServiceEntry => "serviceentries",
            Kind::PeerAuthentication => "peerauthentications",
            Kind::Policy => "policies",
            Kind::MeshPolicy => "meshpolicies",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::MeshPolicy)
    }

    /// The one version built-in kinds are served at by every supported Kubernetes (1.14+); `None`
    /// for Istio's kinds, whose version comes from each object (it differs per Istio release).
    pub fn fixed_version(self) -> Option<&'static str> {
        match self {
            Kind::WorkloadGroup
            | Kind::WorkloadEntry
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::PeerAuthentication
            | Kind::Policy
            | Kind::MeshPolicy => None,
            _ => Some("v1"),
        }
    }

    /// The kind named `name` (`Secret`), if meshvm writes it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A kind at one API version: what a request's URL is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    /// The kind (group, plural and scope follow from it).
    pub kind: Kind,
    /// The version, e.g. `v1` or `v1alpha3`; empty when the object named none (refused on send).
    pub version: String,
}

impl Resource {
    /// `kind` at `version`.
    pub fn new(kind: Kind, version: impl Into<String>) -> Self {
        Self {
            kind,
            version: version.into(),
        }
    }

    /// `kind` at the version `object`'s `apiVersion` names (else the kind's fixed version).
    pub fn of(kind: Kind, object: &Value) -> Self {
        let version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(|v| v.rsplit_once('/').map_or(v, |(_, version)| version))
            .filter(|v| !v.is_empty())
            .or(kind.fixed_version())
            .unwrap_or_default();
        Self::new(kind, version)
    }

    /// `v1`, `apps/v1`, `networking.istio.io/v1alpha3`.
    pub fn api_version(&self) -> String {
        match self.kind.group() {
            "" => self.version.clone(),
            group => format!("{group}/{}", self.version),
        }
    }

    /// `secrets`, `deployments.apps`, `workloadgroups.networking.istio.io`: as RBAC and error
    /// messages name it.
    pub fn name(&self) -> String {
        match self.kind.group() {
            "" => self.kind.plural().to_owned(),
            group => format!("{}.{group}", self.kind.plural()),
        }
    }

    /// The kube-rs resource.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.kind.group(), &self.version, self.kind.name()),
            self.kind.plural(),
        )
    }

    fn url_path(&self, namespace: Option<&str>) -> String {
        DynamicObject::url_path(
            &self.api_resource(),
            namespace.filter(|_| self.kind.namespaced()),
        )
    }
}

/// The body type of a [`Verb::Patch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
}

/// How a write is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Create or update to the wanted object: server-side apply as `meshvm` (force), or — where
    /// the server refuses it (before 1.16) — GET, then POST or a merge PUT guarded by
    /// `resourceVersion`.
    Apply,
    /// POST. When the object exists already ([`Precondition::MustNotExist`] fails) it is read
    /// again and judged with [`Write::same`].
    Create,
    /// POST; when the object exists already and differs, PUT the wanted object guarded by the
    /// `resourceVersion` just read (a replace that lands only on what was compared).
    CreateOrReplace,
    /// PUT of the whole object, guarded by [`Precondition::ResourceVersion`].
    Replace,
    /// PATCH with this body type (e.g. `rollout restart`'s strategic merge patch).
    Patch(PatchType),
    /// DELETE (background propagation, as kubectl); an object already gone counts as deleted.
    Delete,
}

/// What must hold for a write to land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing.
    None,
    /// The object must not exist (a create).
    MustNotExist,
    /// The object must still be as observed: its `resourceVersion` must be this one.
    ResourceVersion(String),
    /// The object must be this very one, unchanged: its `uid` and `resourceVersion` (a delete
    /// sends both as `DeleteOptions.preconditions`, which the API server checks from 1.14 on:
    /// apiserver@kubernetes-1.14.0 pkg/storage/interfaces.go:97-139, passed by
    /// pkg/registry/generic/registry/store.go:880-884; a mismatch is 409 Conflict,
    /// pkg/storage/errors/storage.go:89-98. 1.13 had the `uid` only,
    /// apimachinery@kubernetes-1.13.0 pkg/apis/meta/v1/types.go:514-518).
    Exactly {
        /// `metadata.uid`.
        uid: String,
        /// `metadata.resourceVersion`.
        resource_version: String,
    },
}

/// How to judge, after losing a race (AlreadyExists, Conflict), whether the stored object is
/// what meshvm wanted anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Same {
    /// Every field of the wanted object is stored with the same value (others may add fields).
    Contains,
    /// These top-level fields are equal (e.g. a Secret's `type` and `data`, keys included).
    Fields(&'static [&'static str]),
}

impl Same {
    /// Whether `stored` counts as holding `wanted`.
    pub fn holds(self, stored: &Value, wanted: &Value) -> bool {
        match self {
            Same::Contains => contains(stored, &without_version(wanted)),
            Same::Fields(fields) => fields.iter().all(|f| stored.get(f) == wanted.get(f)),
        }
    }
}

/// One write of a plan row.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Which resource, at the version the object carries.
    pub resource: Resource,
    /// How it is sent.
    pub verb: Verb,
    /// The wanted object (apply, create, replace), the patch body (patch), or `Null` (delete).
    pub object: Value,
    /// What must hold.
    pub precondition: Precondition,
    /// How a lost race is judged; `None`: a lost race is reported as such, unread.
    pub same: Option<Same>,
    /// JSON pointers an apply without server-side apply sets exactly instead of merging.
    pub owned: Vec<String>,
    /// Rows this write goes after (their indices in the plan).
    pub after: Vec<usize>,
    /// The object as the verb read it in this run (`Some(None)`: it was absent), where an apply
    /// without server-side apply starts instead of reading it again; `None`: not read.
    pub seen: Option<Option<Value>>,
}

impl Write {
    fn new(kind: Kind, verb: Verb, object: Value, precondition: Precondition) -> Self {
        Self {
            resource: Resource::of(kind, &object),
            verb,
            object,
            precondition,
            same: None,
            owned: Vec::new(),
            after: Vec::new(),
            seen: None,
        }
    }

    /// Create or update to `object` (at its own `apiVersion`).
    pub fn apply(kind: Kind, object: Value) -> Self {
        Self::new(kind, Verb::Apply, object, Precondition::None)
    }

    /// Create `object`; it must not exist.
    pub fn create(kind: Kind, object: Value) -> Self {
        Self::new(kind, Verb::Create, object, Precondition::MustNotExist)
    }

    /// Create `object`, or replace a different one found instead (guarded by what was read).
    pub fn create_or_replace(kind: Kind, object: Value) -> Self {
        Self::new(
            kind,
            Verb::CreateOrReplace,
            object,
            Precondition::MustNotExist,
        )
    }

    /// Replace the object with `object`, guarded by the `metadata.resourceVersion` it carries.
    pub fn replace(kind: Kind, object: Value) -> Self {
        let precondition = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map_or(Precondition::None, |rv| {
                Precondition::ResourceVersion(rv.to_owned())
            });
        Self::new(kind, Verb::Replace, object, precondition)
    }

    /// Patch the object of `resource` with `body`.
    pub fn patch(resource: Resource, patch: PatchType, body: Value) -> Self {
        Self {
            resource,
            verb: Verb::Patch(patch),
            object: body,
            precondition: Precondition::None,
            same: None,
            owned: Vec::new(),
            after: Vec::new(),
            seen: None,
        }
    }

    /// Delete the object of `resource`.
    pub fn delete(resource: Resource) -> Self {
        Self::patch(resource, PatchType::Merge, Value::Null).verb(Verb::Delete)
    }

    fn verb(mut self, verb: Verb) -> Self {
        self.verb = verb;
        self
    }

    /// Judge a lost race with `same` (the row then reads unchanged when the stored object holds
    /// what was wanted) instead of reporting it.
    #[must_use]
    pub fn same(mut self, same: Same) -> Self {
        self.same = Some(same);
        self
    }

    /// Without server-side apply, set these JSON pointers exactly (remove them when the wanted
    /// object lacks them) instead of merging: fields meshvm alone decides, whose old keys must go.
    #[must_use]
    pub fn owning(mut self, pointers: &[&str]) -> Self {
        self.owned = pointers.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// The object as read in this run (`None`: it was absent): an apply without server-side
    /// apply starts from it instead of reading it again (see the module docs).
    #[must_use]
    pub fn seen(mut self, object: Option<Value>) -> Self {
        self.seen = Some(object);
        self
    }

    /// Send this write only after row `row` of the plan was written.
    #[must_use]
    pub fn after(mut self, row: usize) -> Self {
        self.after.push(row);
        self
    }

    /// Guard a delete (or replace) with this precondition.
    #[must_use]
    pub fn precondition(mut self, precondition: Precondition) -> Self {
        self.precondition = precondition;
        self
    }
}

/// Why a write did not land.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request failed (after the retries [`Connection::call`] makes).
    #[error(transparent)]
    Kube(Box<crate::kube::Error>),
    /// Another client wrote the object first and it does not hold what meshvm wanted (or kept
    /// changing it through every round).
    #[error(
        "{object} was changed by someone else while meshvm wrote it; it was left as they wrote it"
    )]
    Raced {
        /// `Kind ns/name`.
        object: String,
        /// The object as read after losing (when it was read and exists).
        current: Option<Value>,
    },
    /// The write cannot be sent as planned.
    #[error("cannot write {object}: {problem}")]
    Invalid {
        /// `Kind ns/name`.
        object: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl From<crate::kube::Error> for Error {
    fn from(e: crate::kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl crate::errors::Diagnose for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Kube(e) => e.hint(),
            Error::Raced { .. } => Some(
                "run the same command again: it compares with what is stored now and changes only what is still missing".into(),
            ),
            Error::Invalid { .. } => None,
        }
    }
}

/// The first write of a run that failed, and the row it belongs to.
#[derive(Debug)]
pub struct Failure {
    /// Index of the row in the plan.
    pub row: usize,
    /// Why.
    pub error: Error,
}

/// What this run learnt about how the server takes writes; shared by a [`Connection`]'s clones.
#[derive(Debug, Default)]
pub struct ServerWrites {
    /// 0 (the default): not known yet; 1: server-side apply works; 2: it is refused (415).
    apply: AtomicU8,
    /// Held by the one apply that finds out, so concurrent writes do not each probe.
    probe: futures::lock::Mutex<()>,
}

const APPLY_SUPPORTED: u8 = 1;
const APPLY_REFUSED: u8 = 2;

impl ServerWrites {
    /// `Some(true)` when the server took a server-side apply, `Some(false)` when it refused one
    /// with 415, `None` before the first apply.
    pub fn server_side_apply(&self) -> Option<bool> {
        match self.apply.load(Ordering::Acquire) {
            APPLY_SUPPORTED => Some(true),
            APPLY_REFUSED => Some(false),
            _ => None,
        }
    }

    fn learn(&self, supported: bool) {
        let value = if supported {
            APPLY_SUPPORTED
        } else {
            APPLY_REFUSED
        };
        self.apply.store(value, Ordering::Release);
    }
}

/// Treat `conn`'s server as one that refuses server-side apply (as Kubernetes before 1.16 does):
/// every [`Verb::Apply`] on it goes by GET and create/update from now on, without probing. The
/// executor learns this by itself from the first 415; this is for callers (and tests) that know.
pub fn assume_no_server_side_apply(conn: &Connection) {
    conn.memo::<ServerWrites>().learn(false);
}

/// Whether `conn`'s server was found to take server-side apply (`None`: no apply sent yet).
pub fn server_side_apply(conn: &Connection) -> Option<bool> {
    conn.memo::<ServerWrites>().server_side_apply()
}

/// What one write did.
#[derive(Debug, Clone, PartialEq)]
struct Done {
    /// What really happened.
    action: Action,
    /// A phrase for the DETAIL column, when there is something to say.
    detail: Option<String>,
}

impl Done {
    fn as_planned(planned: Action) -> Self {
        Done {
            action: planned,
            detail: None,
        }
    }
    fn with(action: Action, detail: impl Into<String>) -> Self {
        Done {
            action,
            detail: Some(detail.into()),
        }
    }
}

/// Send every write of `plan`, in waves, marking each row; after the first failure the rest are
/// marked not attempted and the failure is returned. With `--dry-run=client` nothing is sent
/// and every row stays planned.
pub async fn execute(conn: &Connection, plan: &mut Plan, dry_run: DryRun) -> Result<(), Failure> {
    if dry_run == DryRun::Client {
        return Ok(());
    }
    let creating_namespaces: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.kind == Kind::Namespace && c.write.is_some() && c.action == Action::Create)
        .map(|c| c.name.clone())
        .collect();
    let waves = waves(&plan.changes);
    let sender = Sender { conn, dry_run };
    for wave in 1..=waves.iter().copied().max().unwrap_or(0) {
        let mut batch: Vec<(usize, Change)> = Vec::new();
        for (i, change) in plan.changes.iter_mut().enumerate() {
            if waves[i] != wave {
                continue;
            }
            // With dryRun=All a namespace is validated but not made, so the server would answer
            // 404 for anything inside it: say so instead of sending a request bound to fail.
            if dry_run == DryRun::Server
                && change
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| creating_namespaces.contains(ns))
            {
                change.detail = format!(
                    "not sent: namespace {} does not exist yet",
                    change.namespace.as_deref().unwrap_or_default()
                );
                continue;
            }
            batch.push((i, change.clone()));
        }
        let results =
            futures::future::join_all(batch.iter().map(|(_, change)| sender.send(change))).await;
        let mut first: Option<Failure> = None;
        for ((i, mut change), result) in batch.into_iter().zip(results) {
            match result {
                Ok(done) => {
                    change.action = done.action;
                    if let Some(detail) = done.detail {
                        change.detail = detail;
                    }
                    change.state = if dry_run == DryRun::Server {
                        State::ServerDryRun
                    } else {
                        State::Done
                    };
                }
                Err(error) => {
                    change.state = State::Failed;
                    if first.is_none() {
                        first = Some(Failure { row: i, error });
                    }
                }
            }
            plan.changes[i] = change;
        }
        if let Some(failure) = first {
            plan.abandon_rest();
            return Err(failure);
        }
    }
    Ok(())
}

/// The wave each row is sent in (0: nothing to send — no write, or not planned any more: a row
/// already done is never sent twice): one more than the latest row it needs —
/// the Namespace row of its namespace, and the rows its write names in [`Write::after`].
pub fn waves(changes: &[Change]) -> Vec<usize> {
    let mut waves = vec![0; changes.len()];
    for (i, row) in changes.iter().enumerate() {
        let Some(write) = row.write.as_ref().filter(|_| row.state == State::Planned) else {
            continue;
        };
        let needs = |j: usize, earlier: &Change| {
            earlier.write.is_some()
                && earlier.state == State::Planned
                && ((earlier.kind == Kind::Namespace
                    && row.namespace.as_deref() == Some(earlier.name.as_str()))
                    || write.after.contains(&j))
        };
        waves[i] = 1 + changes[..i]
            .iter()
            .enumerate()
            .filter(|(j, earlier)| needs(*j, earlier))
            .map(|(j, _)| waves[j])
            .max()
            .unwrap_or(0);
    }
    waves
}

/// The requests of one run.
struct Sender<'a> {
    conn: &'a Connection,
    dry_run: DryRun,
}

/// One row's coordinates, for URLs and messages.
struct Target<'a> {
    write: &'a Write,
    namespace: Option<&'a str>,
    name: &'a str,
    planned: Action,
    reference: String,
}

impl Target<'_> {
    fn request(&self, verb: &'static str) -> Request {
        let mut r = Request::new(verb, self.write.resource.name()).name(self.name);
        if let Some(ns) = self.namespace {
            r = r.ns(ns);
        }
        r
    }
    fn url(&self) -> ::kube::core::Request {
        ::kube::core::Request::new(self.write.resource.url_path(self.namespace))
    }
    fn raced(&self, current: Option<Value>) -> Error {
        Error::Raced {
            object: self.reference.clone(),
            current,
        }
    }
}

/// An HTTP answer: its status code and body.
type Answer = (u16, Value);

impl Sender<'_> {
    fn post_params(&self) -> PostParams {
        PostParams {
            dry_run: self.dry_run == DryRun::Server,
            field_manager: Some(FIELD_MANAGER.into()),
        }
    }

    async fn send(&self, change: &Change) -> Result<Done, Error> {
        let Some(write) = &change.write else {
            return Ok(Done::as_planned(change.action));
        };
        let target = Target {
            write,
            namespace: change.namespace.as_deref(),
            name: &change.name,
            planned: change.action,
            reference: change.reference(),
        };
        if write.resource.version.is_empty() {
            return Err(Error::Invalid {
                object: target.reference,
                problem: "the object names no apiVersion".into(),
            });
        }
        if write.resource.kind.namespaced() && target.namespace.is_none() {
            return Err(Error::Invalid {
                object: target.reference,
                problem: "a namespaced object without a namespace".into(),
            });
        }
        tracing::debug!(row = %target.reference, verb = ?write.verb, "sending");
        match write.verb {
            Verb::Apply => self.apply(&target).await,
            Verb::Create | Verb::CreateOrReplace => self.create(&target).await,
            Verb::Replace => self.replace(&target, &write.object, target.planned).await,
            Verb::Patch(kind) => self.patch(&target, kind).await,
            Verb::Delete => self.delete(&target).await,
        }
    }

    /// Send one request through [`Connection::call`] (retrying what is safe to retry); also
    /// says how many attempts it took, since an answer after a retry may be to our own
    /// earlier attempt.
    async fn call(
        &self,
        action: Request,
        build: impl Fn() -> Result<http::Request<Vec<u8>>, ::kube::core::request::Error>,
    ) -> (Result<Answer, crate::kube::Error>, u32) {
        let attempts = AtomicU32::new(0);
        let client = &self.conn.client;
        let answer = self
            .conn
            .call(action, || {
                attempts.fetch_add(1, Ordering::Relaxed);
                let request = build();
                async move { send(client, request.map_err(::kube::Error::BuildRequest)?).await }
            })
            .await;
        (answer, attempts.load(Ordering::Relaxed))
    }

    async fn get(&self, target: &Target<'_>) -> Result<Option<Value>, Error> {
        let url = target.url();
        match self
            .call(target.request("get"), || {
                url.get(target.name, &::kube::api::GetParams::default())
            })
            .await
            .0
        {
            Ok((_, object)) => Ok(Some(object)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn apply(&self, target: &Target<'_>) -> Result<Done, Error> {
        let learnt = self.conn.memo::<ServerWrites>();
        loop {
            match learnt.server_side_apply() {
                Some(true) => return self.server_side_apply(target).await.map_err(Error::from),
                Some(false) => return self.apply_by_update(target).await,
                None => {
                    let _turn = learnt.probe.lock().await;
                    if learnt.server_side_apply().is_some() {
                        continue;
                    }
                    // Known to be older than 1.16: it refuses apply (415), so do not ask. 1.16
                    // turned the `ServerSideApply` gate on by default; 1.14–1.15 have it alpha,
                    // off by default (k8s-versions.md §1: apiserver@kubernetes-1.14.0
                    // pkg/features/kube_features.go, @kubernetes-1.16.0 the same file). A 1.15
                    // with the alpha gate on is written the old way too, which it also takes.
                    if let Some(version) = crate::read::known_server_version(self.conn)
                        && !version.at_least(16)
                    {
                        tracing::info!(
                            server = %self.conn.server,
                            %version,
                            "Kubernetes before 1.16 refuses server-side apply: writing with create/update guarded by resourceVersion"
                        );
                        learnt.learn(false);
                        continue;
                    }
                    match self.server_side_apply(target).await {
                        Err(e) if e.is_unsupported_media_type() => {
                            tracing::info!(
                                server = %self.conn.server,
                                "the API server refuses server-side apply (415, Kubernetes before 1.16): writing with create/update guarded by resourceVersion"
                            );
                            learnt.learn(false);
                        }
                        // The patch handler checks the media type before anything else, so
                        // its own refusals (409, 422) prove it took apply; others (403 from
                        // authorization, 404 from routing, 5xx) prove nothing: the next apply
                        // finds out.
                        Err(e) if matches!(e.code(), Some(409 | 422)) => {
                            learnt.learn(true);
                            return Err(e.into());
                        }
                        Err(e) => return Err(e.into()),
                        Ok(done) => {
                            learnt.learn(true);
                            return Ok(done);
                        }
                    }
                }
            }
        }
    }

    async fn server_side_apply(&self, target: &Target<'_>) -> Result<Done, crate::kube::Error> {
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = self.dry_run == DryRun::Server;
        let url = target.url();
        let patch = Patch::Apply(&target.write.object);
        let (answer, attempts) = self
            .call(target.request("patch"), || {
                url.patch(target.name, &params, &patch)
            })
            .await;
        let (code, _) = answer?;
        Ok(match (code, target.planned) {
            (201, _) => Done::as_planned(Action::Create),
            // 200 to a first attempt: the object was there before this write.
            (_, Action::Create) if attempts == 1 => Done::with(
                Action::Update,
                "it existed already: server-side apply set meshvm's fields",
            ),
            (_, planned) => Done::as_planned(planned),
        })
    }

    /// Apply without server-side apply: GET, then POST or a merge PUT guarded by the
    /// `resourceVersion` read, again on AlreadyExists or Conflict, a bounded number of rounds.
    async fn apply_by_update(&self, target: &Target<'_>) -> Result<Done, Error> {
        let wanted = &target.write.object;
        let mut current = match &target.write.seen {
            Some(seen) => seen.clone(),
            None => self.get(target).await?,
        };
        // What a write answered only after a retry may have done (its first attempt may have
        // landed, unseen): a later "it already holds that" is then our own doing.
        let mut maybe_done: Option<Action> = None;
        for _ in 0..MAX_UPDATE_ROUNDS {
            match current {
                None => {
                    let url = target.url();
                    let body = serde_json::to_vec(wanted).map_err(|e| Error::Invalid {
                        object: target.reference.clone(),
                        problem: e.to_string(),
                    })?;
                    let params = self.post_params();
                    let (answer, attempts) = self
                        .call(target.request("create"), || {
                            url.create(&params, body.clone())
                        })
                        .await;
                    match answer {
                        Ok(_) => return Ok(Done::as_planned(Action::Create)),
                        Err(e) if e.is_already_exists() => {
                            if attempts > 1 {
                                maybe_done = Some(Action::Create);
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(stored) => {
                    let merged = overlay(&stored, wanted, &target.write.owned);
                    if merged == stored {
                        return Ok(Done::as_planned(maybe_done.unwrap_or(Action::Unchanged)));
                    }
                    let action = if target.planned == Action::Create {
                        Action::Update
                    } else {
                        target.planned
                    };
                    let (answer, attempts) = self.put(target, &merged).await;
                    match answer {
                        Ok(_) => return Ok(Done::as_planned(action)),
                        Err(e) if e.is_conflict() || e.is_not_found() => {
                            if attempts > 1 {
                                maybe_done = Some(action);
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            current = self.get(target).await?;
        }
        Err(target.raced(current))
    }

    async fn put(
        &self,
        target: &Target<'_>,
        object: &Value,
    ) -> (Result<Answer, crate::kube::Error>, u32) {
        let url = target.url();
        let body = serde_json::to_vec(object).unwrap_or_default();
        let params = self.post_params();
        self.call(target.request("update"), || {
            url.replace(target.name, &params, body.clone())
        })
        .await
    }

    async fn create(&self, target: &Target<'_>) -> Result<Done, Error> {
        let write = target.write;
        let url = target.url();
        let body = serde_json::to_vec(&write.object).unwrap_or_default();
        let params = self.post_params();
        let (answer, attempts) = self
            .call(target.request("create"), || {
                url.create(&params, body.clone())
            })
            .await;
        match answer {
            Ok(_) => return Ok(Done::as_planned(Action::Create)),
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        let Some(same) = write.same else {
            return Err(target.raced(None));
        };
        // Someone made it between our read and our create: judge what they stored.
        let Some(stored) = self.get(target).await? else {
            return Err(target.raced(None));
        };
        if same.holds(&stored, &write.object) {
            return Ok(Done::with(
                settled(attempts, Action::Create),
                "already there with the same content (an earlier attempt or another run made it)",
            ));
        }
        if write.verb != Verb::CreateOrReplace {
            return Err(target.raced(Some(stored)));
        }
        let mut guarded = write.object.clone();
        guarded["metadata"]["resourceVersion"] = stored
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        self.replace(target, &guarded, Action::Update).await
    }

    async fn replace(
        &self,
        target: &Target<'_>,
        object: &Value,
        action: Action,
    ) -> Result<Done, Error> {
        let mut guarded = object.clone();
        if let Precondition::ResourceVersion(rv) = &target.write.precondition
            && guarded.pointer("/metadata/resourceVersion").is_none()
        {
            guarded["metadata"]["resourceVersion"] = Value::String(rv.clone());
        }
        let (answer, attempts) = self.put(target, &guarded).await;
        match answer {
            Ok(_) => return Ok(Done::as_planned(action)),
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let Some(same) = target.write.same else {
            return Err(target.raced(None));
        };
        // It changed after we compared it: only "it now holds what we want" is fine.
        match self.get(target).await? {
            Some(stored) if same.holds(&stored, &target.write.object) => Ok(Done::with(
                settled(attempts, action),
                "already replaced with the same content (an earlier attempt or another run)",
            )),
            stored => Err(target.raced(stored)),
        }
    }

    async fn patch(&self, target: &Target<'_>, kind: PatchType) -> Result<Done, Error> {
        let params = PatchParams {
            dry_run: self.dry_run == DryRun::Server,
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let url = target.url();
        let body = &target.write.object;
        let patch = match kind {
            PatchType::Merge => Patch::Merge(body),
            PatchType::Strategic => Patch::Strategic(body),
        };
        self.call(target.request("patch"), || {
            url.patch(target.name, &params, &patch)
        })
        .await
        .0?;
        Ok(Done::as_planned(target.planned))
    }

    async fn delete(&self, target: &Target<'_>) -> Result<Done, Error> {
        let mut params = DeleteParams::background();
        params.dry_run = self.dry_run == DryRun::Server;
        match &target.write.precondition {
            Precondition::ResourceVersion(rv) => {
                params.preconditions = Some(Preconditions {
                    resource_version: Some(rv.clone()),
                    uid: None,
                });
            }
            Precondition::Exactly {
                uid,
                resource_version,
            } => {
                params.preconditions = Some(Preconditions {
                    resource_version: Some(resource_version.clone()),
                    uid: Some(uid.clone()),
                });
            }
            Precondition::None | Precondition::MustNotExist => {}
        }
        let url = target.url();
        match self
            .call(target.request("delete"), || {
                url.delete(target.name, &params)
            })
            .await
            .0
        {
            Ok(_) => Ok(Done::as_planned(target.planned)),
            Err(e) if e.is_not_found() => Ok(Done::with(target.planned, "was already gone")),
            Err(e) if e.is_conflict() => Err(target.raced(None)),
            Err(e) => Err(e.into()),
        }
    }
}

/// What a write that lost a race to an object holding what it wanted did: nothing, when the
/// first attempt lost; after a retry the winner may have been our own earlier attempt, whose
/// answer was lost, so the row keeps what it set out to do.
fn settled(attempts: u32, planned: Action) -> Action {
    if attempts > 1 {
        planned
    } else {
        Action::Unchanged
    }
}

/// Send one request and read the whole answer; an error status becomes `kube::Error::Api`
/// with the server's `Status` (or one made from the body when it is not a `Status`).
async fn send(client: &Client, request: http::Request<Vec<u8>>) -> Result<Answer, ::kube::Error> {
    let response = client.send(request.map(Body::from)).await?;
    let code = response.status();
    let bytes = response.into_body().collect_bytes().await?;
    if code.is_client_error() || code.is_server_error() {
        let mut status = serde_json::from_slice::<Status>(&bytes).unwrap_or_else(|_| {
            Status::failure(
                String::from_utf8_lossy(&bytes).trim(),
                "Failed to parse error data",
            )
        });
        if status.code == 0 {
            status.code = code.as_u16();
        }
        return Err(::kube::Error::Api(status.boxed()));
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(::kube::Error::SerdeError)?
    };
    Ok((code.as_u16(), body))
}

/// Whether every field of `wanted` is in `have` with the same value (fields others set are
/// fine; an empty map in `wanted` asks for nothing).
pub fn contains(have: &Value, wanted: &Value) -> bool {
    match (have, wanted) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv)) || is_empty_map(wv)),
        _ => have == wanted,
    }
}

fn is_empty_map(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty())
}

fn without_version(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        meta.remove("resourceVersion");
    }
    object
}

/// `stored` with `wanted` laid over it, as an apply without server-side apply writes it: maps
/// merge key by key (labels and annotations of others stay), lists and scalars of `wanted`
/// replace what is stored, an empty map adds nothing, and each `owned` pointer is set exactly as
/// `wanted` has it (removed when `wanted` lacks it).
pub fn overlay(stored: &Value, wanted: &Value, owned: &[String]) -> Value {
    let mut merged = stored.clone();
    merge_into(&mut merged, &without_version(wanted));
    for pointer in owned {
        match wanted.pointer(pointer) {
            Some(value) => set_pointer(&mut merged, pointer, value.clone()),
            None => remove_pointer(&mut merged, pointer),
        }
    }
    merged
}

fn merge_into(target: &mut Value, wanted: &Value) {
    match (target, wanted) {
        (Value::Object(t), Value::Object(w)) => {
            for (key, value) in w {
                match t.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_into(existing, value);
                    }
                    Some(existing) => *existing = value.clone(),
                    None if is_empty_map(value) => {}
                    None => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, wanted) => *target = wanted.clone(),
    }
}

fn pointer_parts(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn set_pointer(target: &mut Value, pointer: &str, value: Value) {
    let parts = pointer_parts(pointer);
    let Some((last, parents)) = parts.split_last() else {
        *target = value;
        return;
    };
    let mut at = target;
    for part in parents {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        at = at
            .as_object_mut()
            .expect("made an object above")
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !at.is_object() {
        *at = Value::Object(Map::new());
    }
    at.as_object_mut()
        .expect("made an object above")
        .insert(last.clone(), value);
}

fn remove_pointer(target: &mut Value, pointer: &str) {
    let parts = pointer_parts(pointer);
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut at = target;
    for part in parents {
        match at.get_mut(part.as_str()) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(map) = at.as_object_mut() {
        map.remove(last.as_str());
    }
}

/// Connections made for unit tests of code that writes: over a scripted fake API server.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use ::kube::client::Body;
    use serde_json::Value;

    use crate::kube::Connection;

    /// One request the fake server saw.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct Seen {
        /// `GET`, `POST`, …
        pub method: String,
        /// URL path.
        pub path: String,
        /// Raw query.
        pub query: String,
        /// `Content-Type`, when sent.
        pub content_type: String,
        /// The JSON body (`Null` when none).
        pub body: Value,
    }

    impl Seen {
        /// `PATCH /api/v1/namespaces/x`, for assertions.
        pub(crate) fn line(&self) -> String {
            format!("{} {}", self.method, self.path)
        }
    }

    /// The requests seen so far.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Log(pub Arc<Mutex<Vec<Seen>>>);

    impl Log {
        /// Every request, in order.
        pub(crate) fn all(&self) -> Vec<Seen> {
            self.0.lock().unwrap().clone()
        }
        /// `METHOD path` of every request.
        pub(crate) fn lines(&self) -> Vec<String> {
            self.all().iter().map(Seen::line).collect()
        }
    }

    /// A `Status` body as the API server sends it.
    pub(crate) fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
        (
            code,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "code": code, "reason": reason, "message": message}),
        )
    }

    /// Kubernetes 1.14's refusal of `application/apply-patch+yaml`.
    pub(crate) fn unsupported_apply() -> (u16, Value) {
        status(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json",
        )
    }

    /// A connection whose server answers each request with the next of `answers`, in order
    /// (a 500 when they run out, so a test that sends more than scripted fails loudly).
    pub(crate) fn connection(answers: Vec<(u16, Value)>) -> (Connection, Log) {
        let answers = Mutex::new(VecDeque::from(answers));
        responder(move |_| {
            answers.lock().unwrap().pop_front().unwrap_or_else(|| {
                status(
                    500,
                    "InternalError",
                    "the fake server has no answer scripted",
                )
            })
        })
    }

    /// A connection whose server answers each request with `answer(request)`.
    pub(crate) fn responder(
        answer: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static,
    ) -> (Connection, Log) {
        let answer = Arc::new(answer);
        let log = Log::default();
        let seen = log.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let answer = answer.clone();
            let seen = seen.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let request = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let (code, body) = answer(&request);
                seen.0.lock().unwrap().push(request);
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(code)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                )
            }
        });
        let client = ::kube::Client::new(service, "default");
        (
            Connection::from_client(client, "default", "https://fake.test"),
            log,
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fake::{self, status, unsupported_apply};
    use super::*;

    fn namespace(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "meshvm"}}})
    }

    fn stored(mut object: Value, rv: &str) -> Value {
        object["metadata"]["resourceVersion"] = json!(rv);
        object["metadata"]["uid"] = json!("u-1");
        object
    }

    fn row(action: Action, kind: Kind, ns: Option<&str>, name: &str, write: Write) -> Change {
        Change::new(action, kind, ns, name).write(write)
    }

    /// A plan of one [`row`].
    fn one_row(action: Action, kind: Kind, ns: Option<&str>, name: &str, write: Write) -> Plan {
        let mut plan = Plan::default();
        plan.push(row(action, kind, ns, name, write));
        plan
    }

    fn ns_plan(name: &str) -> Plan {
        one_row(
            Action::Create,
            Kind::Namespace,
            None,
            name,
            Write::apply(Kind::Namespace, namespace(name)),
        )
    }

    fn query_has(seen: &fake::Seen, part: &str) -> bool {
        seen.query.split('&').any(|q| q == part)
    }

    #[tokio::test]
    async fn server_side_apply_path() {
        let (conn, log) = fake::connection(vec![(201, stored(namespace("vm"), "5"))]);
        let mut plan = ns_plan("vm");
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        let seen = log.all();
        assert_eq!(log.lines(), ["PATCH /api/v1/namespaces/vm"]);
        assert_eq!(seen[0].content_type, "application/apply-patch+yaml");
        assert!(query_has(&seen[0], "fieldManager=meshvm") && query_has(&seen[0], "force=true"));
        assert!(!seen[0].query.contains("dryRun"));
        assert_eq!(seen[0].body, namespace("vm"));
        assert_eq!(plan.changes[0].state, State::Done);
        assert_eq!(plan.changes[0].words(), "created");
        assert_eq!(conn.memo::<ServerWrites>().server_side_apply(), Some(true));
    }

    #[tokio::test]
    async fn a_first_answer_200_to_a_planned_create_means_it_existed() {
        let (conn, _log) = fake::connection(vec![(200, stored(namespace("vm"), "5"))]);
        let mut plan = ns_plan("vm");
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(plan.changes[0].words(), "updated");
        assert!(plan.changes[0].detail.contains("existed already"));
    }

    #[tokio::test]
    async fn refused_apply_falls_back_to_create_and_is_remembered() {
        let (conn, log) = fake::connection(vec![
            unsupported_apply(),
            status(404, "NotFound", "namespaces \"a\" not found"),
            (201, stored(namespace("a"), "7")),
            // The second namespace: no apply is tried again.
            status(404, "NotFound", "namespaces \"b\" not found"),
            (201, stored(namespace("b"), "8")),
        ]);
        let mut plan = ns_plan("a");
        plan.push(row(
            Action::Create,
            Kind::Namespace,
            None,
            "b",
            Write::apply(Kind::Namespace, namespace("b")).after(0),
        ));
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(
            log.lines(),
            [
                "PATCH /api/v1/namespaces/a",
                "GET /api/v1/namespaces/a",
                "POST /api/v1/namespaces",
                "GET /api/v1/namespaces/b",
                "POST /api/v1/namespaces",
            ]
        );
        let seen = log.all();
        assert_eq!(seen[2].body, namespace("a"));
        assert!(query_has(&seen[2], "fieldManager=meshvm"));
        assert_eq!(conn.memo::<ServerWrites>().server_side_apply(), Some(false));
        assert!(plan.changes.iter().all(|c| c.words() == "created"));
    }

    #[tokio::test]
    async fn a_failed_probe_decides_nothing() {
        let (conn, _log) = fake::connection(vec![
            status(503, "ServiceUnavailable", "etcd is down"),
            status(503, "ServiceUnavailable", "etcd is down"),
            status(503, "ServiceUnavailable", "etcd is down"),
            status(503, "ServiceUnavailable", "etcd is down"),
            status(503, "ServiceUnavailable", "etcd is down"),
            status(503, "ServiceUnavailable", "etcd is down"),
            status(503, "ServiceUnavailable", "etcd is down"),
        ]);
        let mut plan = ns_plan("vm");
        let failure = execute(&conn, &mut plan, DryRun::None).await.unwrap_err();
        assert!(
            failure.error.to_string().contains("etcd is down"),
            "{}",
            failure.error
        );
        assert_eq!(conn.memo::<ServerWrites>().server_side_apply(), None);
        let (conn, _log) = fake::connection(vec![status(422, "Invalid", "bad label")]);
        let mut plan = ns_plan("vm");
        execute(&conn, &mut plan, DryRun::None).await.unwrap_err();
        assert_eq!(conn.memo::<ServerWrites>().server_side_apply(), Some(true));
    }

    #[tokio::test]
    async fn concurrent_applies_probe_once() {
        // A Kubernetes 1.14 server: apply refused, namespaces absent until created.
        let (conn, log) = fake::responder(|seen| match seen.method.as_str() {
            "PATCH" => unsupported_apply(),
            "GET" => status(404, "NotFound", "not found"),
            _ => (201, seen.body.clone()),
        });
        let mut plan = Plan::default();
        for name in ["a", "b", "c"] {
            plan.push(row(
                Action::Create,
                Kind::Namespace,
                None,
                name,
                Write::apply(Kind::Namespace, namespace(name)),
            ));
        }
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        let lines = log.lines();
        let count = |line: &str| lines.iter().filter(|l| *l == line).count();
        assert_eq!(lines[0], "PATCH /api/v1/namespaces/a", "{lines:?}");
        assert_eq!(count("PATCH /api/v1/namespaces/a"), 1, "{lines:?}");
        assert!(
            !lines
                .iter()
                .any(|l| l.ends_with("/b") && l.starts_with("PATCH")),
            "{lines:?}"
        );
        assert_eq!(count("POST /api/v1/namespaces"), 3, "{lines:?}");
        assert!(plan.changes.iter().all(|c| c.words() == "created"));
    }

    /// A server that answers `/version` with `minor` and takes writes: PATCH (apply) and POST
    /// are answered with the body sent, GET with 404.
    fn server_at(minor: &'static str) -> (Connection, fake::Log) {
        fake::responder(
            move |seen| match (seen.method.as_str(), seen.path.as_str()) {
                ("GET", "/version") => (
                    200,
                    json!({"major": "1", "minor": minor, "gitVersion": format!("v1.{minor}.0")}),
                ),
                ("GET", _) => status(404, "NotFound", "not found"),
                ("PATCH", _) if minor == "14" => unsupported_apply(),
                _ => (201, seen.body.clone()),
            },
        )
    }

    #[tokio::test]
    async fn a_server_known_older_than_1_16_is_not_asked_to_apply() {
        let (conn, log) = server_at("14");
        crate::read::server_version(&conn).await.unwrap();
        let mut plan = ns_plan("a");
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(
            log.lines(),
            [
                "GET /version",
                "GET /api/v1/namespaces/a",
                "POST /api/v1/namespaces"
            ],
            "no refused apply first"
        );
        assert_eq!(conn.memo::<ServerWrites>().server_side_apply(), Some(false));
        assert_eq!(plan.changes[0].words(), "created");

        // 1.16 and later: applied, as before the version was known.
        let (conn, log) = server_at("16");
        crate::read::server_version(&conn).await.unwrap();
        let mut plan = ns_plan("a");
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(log.lines(), ["GET /version", "PATCH /api/v1/namespaces/a"]);
    }

    #[tokio::test]
    async fn an_apply_without_server_side_apply_starts_from_what_was_read() {
        let (conn, log) = server_at("14");
        crate::read::server_version(&conn).await.unwrap();
        let mut plan = one_row(
            Action::Create,
            Kind::Namespace,
            None,
            "a",
            Write::apply(Kind::Namespace, namespace("a")).seen(None),
        );
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(
            log.lines(),
            ["GET /version", "POST /api/v1/namespaces"],
            "read absent in this run: created without reading it again"
        );
        assert_eq!(plan.changes[0].words(), "created");

        // Read as it was: an update guarded by the resourceVersion read.
        let wanted = entry("10.0.0.6", json!({"app": "vm"}));
        let before = stored(entry("10.0.0.5", json!({"app": "vm"})), "41");
        let (conn, log) = fake::connection(vec![(200, json!({}))]);
        assume_no_server_side_apply(&conn);
        let mut plan = one_row(
            Action::Update,
            Kind::WorkloadEntry,
            Some("vm"),
            "vm-1",
            Write::apply(Kind::WorkloadEntry, wanted).seen(Some(before)),
        );
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        let seen = log.all();
        assert_eq!(
            log.lines(),
            ["PUT /apis/networking.istio.io/v1alpha3/namespaces/vm/workloadentries/vm-1"]
        );
        assert_eq!(seen[0].body["metadata"]["resourceVersion"], "41");
        assert_eq!(seen[0].body["spec"]["address"], "10.0.0.6");
    }

    #[tokio::test]
    async fn a_stale_read_costs_one_more_round_not_a_wrong_write() {
        // Read absent, but another client created it meanwhile: AlreadyExists, then read and
        // compared as without a read.
        let theirs = stored(namespace("a"), "9");
        let (conn, log) = fake::connection(vec![
            status(409, "AlreadyExists", "namespaces \"a\" already exists"),
            (200, theirs),
        ]);
        assume_no_server_side_apply(&conn);
        let mut plan = one_row(
            Action::Create,
            Kind::Namespace,
            None,
            "a",
            Write::apply(Kind::Namespace, namespace("a")).seen(None),
        );
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(
            log.lines(),
            ["POST /api/v1/namespaces", "GET /api/v1/namespaces/a"]
        );
        assert_eq!(
            plan.changes[0].words(),
            "unchanged",
            "it holds what was wanted"
        );

        // Read at resourceVersion 41, changed since: 409, read again, PUT at the new version.
        let wanted = entry("10.0.0.6", json!({"app": "vm"}));
        let before = stored(entry("10.0.0.5", json!({"app": "vm"})), "41");
        let now = stored(entry("10.0.0.5", json!({"app": "vm", "b": "c"})), "42");
        let (conn, log) = fake::connection(vec![
            status(409, "Conflict", "the object has been modified"),
            (200, now),
            (200, json!({})),
        ]);
        assume_no_server_side_apply(&conn);
        let mut plan = one_row(
            Action::Update,
            Kind::WorkloadEntry,
            Some("vm"),
            "vm-1",
            Write::apply(Kind::WorkloadEntry, wanted).seen(Some(before)),
        );
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        let seen = log.all();
        assert_eq!(seen.len(), 3, "{:?}", log.lines());
        assert_eq!(seen[0].body["metadata"]["resourceVersion"], "41");
        assert_eq!(seen[2].method, "PUT");
        assert_eq!(seen[2].body["metadata"]["resourceVersion"], "42");
        assert_eq!(plan.changes[0].state, State::Done);
    }

    #[allow(clippy::needless_pass_by_value)] // called with json!(...) literals
    fn entry(address: &str, labels: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "WorkloadEntry",
               "metadata": {"name": "vm-1", "namespace": "vm", "labels": {"app": "vm"}},
               "spec": {"address": address, "labels": labels, "serviceAccount": "vm"}})
    }

    fn entry_plan(wanted: Value) -> Plan {
        one_row(
            Action::Update,
            Kind::WorkloadEntry,
            Some("vm"),
            "vm-1",
            Write::apply(Kind::WorkloadEntry, wanted).owning(&["/spec/labels"]),
        )
    }

    #[tokio::test]
    async fn fallback_update_merges_and_guards_with_the_resource_version() {
        let mut current = stored(entry("10.0.0.5", json!({"app": "vm", "old": "x"})), "41");
        current["metadata"]["labels"]["team"] = json!("theirs");
        current["metadata"]["annotations"] = json!({"other": "kept"});
        current["spec"]["locality"] = json!("us/east");
        let wanted = entry("10.0.0.6", json!({"app": "vm"}));
        let (conn, log) = fake::connection(vec![
            unsupported_apply(),
            (200, current.clone()),
            (200, json!({})),
        ]);
        let mut plan = entry_plan(wanted);
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(
            log.lines(),
            [
                "PATCH /apis/networking.istio.io/v1alpha3/namespaces/vm/workloadentries/vm-1",
                "GET /apis/networking.istio.io/v1alpha3/namespaces/vm/workloadentries/vm-1",
                "PUT /apis/networking.istio.io/v1alpha3/namespaces/vm/workloadentries/vm-1",
            ],
            "written at the apiVersion the object carries"
        );
        let put = &log.all()[2].body;
        assert_eq!(put["metadata"]["resourceVersion"], "41", "guarded");
        assert_eq!(
            put["metadata"]["labels"],
            json!({"app": "vm", "team": "theirs"})
        );
        assert_eq!(put["metadata"]["annotations"], json!({"other": "kept"}));
        assert_eq!(put["spec"]["locality"], "us/east", "others' fields stay");
        assert_eq!(put["spec"]["address"], "10.0.0.6");
        assert_eq!(
            put["spec"]["labels"],
            json!({"app": "vm"}),
            "owned: old key gone"
        );
        assert_eq!(plan.changes[0].words(), "updated");
    }

    #[tokio::test]
    async fn fallback_retries_a_conflict_by_reading_again() {
        let wanted = entry("10.0.0.6", json!({"app": "vm"}));
        let first = stored(entry("10.0.0.5", json!({"app": "vm"})), "41");
        let second = stored(entry("10.0.0.5", json!({"app": "vm", "b": "c"})), "42");
        let (conn, log) = fake::connection(vec![
            unsupported_apply(),
            (200, first),
            status(409, "Conflict", "the object has been modified"),
            (200, second),
            (200, json!({})),
        ]);
        let mut plan = entry_plan(wanted);
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        let seen = log.all();
        assert_eq!(seen.len(), 5, "{:?}", log.lines());
        assert_eq!(seen[4].method, "PUT");
        assert_eq!(seen[4].body["metadata"]["resourceVersion"], "42");
        assert_eq!(plan.changes[0].state, State::Done);
    }

    #[tokio::test]
    async fn fallback_gives_up_after_bounded_conflicts() {
        let mut answers = vec![unsupported_apply()];
        for i in 0..MAX_UPDATE_ROUNDS {
            answers.push((200, stored(entry("10.0.0.5", json!({})), &i.to_string())));
            answers.push(status(409, "Conflict", "modified"));
        }
        answers.push((200, stored(entry("10.0.0.5", json!({})), "99")));
        let (conn, _log) = fake::connection(answers);
        let mut plan = entry_plan(entry("10.0.0.6", json!({})));
        let failure = execute(&conn, &mut plan, DryRun::None).await.unwrap_err();
        assert!(
            matches!(failure.error, Error::Raced { .. }),
            "{:?}",
            failure.error
        );
        assert_eq!(plan.changes[0].words(), "failed to update");
    }

    #[tokio::test]
    async fn fallback_detects_unchanged() {
        let wanted = entry("10.0.0.5", json!({"app": "vm"}));
        let mut current = stored(wanted.clone(), "3");
        current["metadata"]["labels"]["extra"] = json!("theirs");
        current["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        let (conn, log) = fake::connection(vec![unsupported_apply(), (200, current)]);
        let mut plan = entry_plan(wanted);
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(log.lines().len(), 2, "no write: {:?}", log.lines());
        assert_eq!(plan.changes[0].words(), "unchanged");
    }

    #[tokio::test]
    async fn a_create_retried_into_already_exists_is_still_reported_created() {
        // The first POST's answer is lost (500 after it may have landed); the retry meets
        // AlreadyExists and the stored object is what was wanted: our own earlier attempt.
        let wanted = entry("10.0.0.6", json!({"app": "vm"}));
        let mut plan = entry_plan(wanted.clone());
        plan.changes[0].action = Action::Create;
        let (conn, log) = fake::connection(vec![
            unsupported_apply(),
            status(404, "NotFound", "not found"),
            status(500, "InternalError", "etcd timeout"),
            status(409, "AlreadyExists", "already exists"),
            (200, stored(wanted, "9")),
        ]);
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(log.lines().len(), 5, "{:?}", log.lines());
        assert_eq!(plan.changes[0].words(), "created");
    }

    #[tokio::test]
    async fn fallback_create_that_loses_the_race_updates_what_won() {
        let wanted = entry("10.0.0.6", json!({"app": "vm"}));
        let mut plan = entry_plan(wanted);
        plan.changes[0].action = Action::Create;
        let (conn, log) = fake::connection(vec![
            unsupported_apply(),
            status(404, "NotFound", "not found"),
            status(409, "AlreadyExists", "already exists"),
            (200, stored(entry("10.0.0.5", json!({"app": "vm"})), "9")),
            (200, json!({})),
        ]);
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(log.all()[4].method, "PUT");
        assert_eq!(log.all()[4].body["metadata"]["resourceVersion"], "9");
        assert_eq!(plan.changes[0].words(), "updated");
    }

    #[tokio::test]
    async fn server_dry_run_sends_dry_run_all_in_both_paths() {
        let (conn, log) = fake::connection(vec![(201, json!({}))]);
        let mut plan = ns_plan("vm");
        execute(&conn, &mut plan, DryRun::Server).await.unwrap();
        assert!(query_has(&log.all()[0], "dryRun=All"), "{:?}", log.all());
        assert_eq!(plan.changes[0].words(), "created (server dry run)");

        let (conn, log) = fake::connection(vec![
            unsupported_apply(),
            status(404, "NotFound", "not found"),
            (201, json!({})),
        ]);
        let mut plan = ns_plan("vm");
        execute(&conn, &mut plan, DryRun::Server).await.unwrap();
        let seen = log.all();
        assert!(query_has(&seen[0], "dryRun=All"));
        assert!(!seen[1].query.contains("dryRun"), "reads are plain");
        assert_eq!(seen[2].method, "POST");
        assert!(query_has(&seen[2], "dryRun=All"));
        assert_eq!(plan.changes[0].state, State::ServerDryRun);
    }

    #[tokio::test]
    async fn a_row_already_done_is_not_sent_again() {
        let (conn, log) = fake::connection(vec![]);
        let mut plan = ns_plan("vm");
        plan.changes[0].state = State::Done;
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert!(log.all().is_empty(), "{:?}", log.lines());
        assert_eq!(plan.changes[0].words(), "created");
    }

    #[tokio::test]
    async fn client_dry_run_sends_nothing() {
        let (conn, log) = fake::connection(vec![]);
        let mut plan = ns_plan("vm");
        execute(&conn, &mut plan, DryRun::Client).await.unwrap();
        assert!(log.all().is_empty());
        assert_eq!(plan.changes[0].words(), "would create");
    }

    #[tokio::test]
    async fn server_dry_run_holds_back_what_goes_into_a_new_namespace() {
        let (conn, log) = fake::connection(vec![(201, json!({}))]);
        let mut plan = ns_plan("vm");
        plan.push(row(
            Action::Create,
            Kind::ServiceAccount,
            Some("vm"),
            "vm",
            Write::apply(
                Kind::ServiceAccount,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "vm", "namespace": "vm"}}),
            ),
        ));
        execute(&conn, &mut plan, DryRun::Server).await.unwrap();
        assert_eq!(log.lines(), ["PATCH /api/v1/namespaces/vm"]);
        assert_eq!(
            plan.changes[1].detail,
            "not sent: namespace vm does not exist yet"
        );
        assert_eq!(plan.changes[1].state, State::Planned);
    }

    #[tokio::test]
    async fn a_failure_mid_plan_marks_the_rest_not_attempted() {
        let (conn, log) = fake::connection(vec![
            (201, json!({})),
            status(403, "Forbidden", "serviceaccounts is forbidden"),
        ]);
        let mut plan = ns_plan("vm");
        plan.push(row(
            Action::Create,
            Kind::ServiceAccount,
            Some("vm"),
            "vm",
            Write::apply(
                Kind::ServiceAccount,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "vm", "namespace": "vm"}}),
            ),
        ));
        plan.push(row(
            Action::Update,
            Kind::Endpoints,
            Some("vm"),
            "svc",
            Write::replace(
                Kind::Endpoints,
                json!({"apiVersion": "v1", "kind": "Endpoints",
                       "metadata": {"name": "svc", "namespace": "vm", "resourceVersion": "3"}}),
            )
            .after(1),
        ));
        plan.push(Change::new(
            Action::Unchanged,
            Kind::Secret,
            Some("vm"),
            "s",
        ));
        let failure = execute(&conn, &mut plan, DryRun::None).await.unwrap_err();
        assert_eq!(failure.row, 1);
        let text = failure.error.to_string();
        assert!(
            text.contains("patch on serviceaccounts in namespace vm"),
            "{text}"
        );
        let words: Vec<String> = plan.changes.iter().map(Change::words).collect();
        assert_eq!(
            words,
            ["created", "failed to create", "not updated", "unchanged"]
        );
        assert_eq!(log.lines().len(), 2);
    }

    fn secret(data: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "cacerts", "namespace": "istio-system"},
               "data": {"ca-key.pem": data}})
    }

    fn secret_plan(write: Write, action: Action) -> Plan {
        one_row(action, Kind::Secret, Some("istio-system"), "cacerts", write)
    }

    #[tokio::test]
    async fn create_that_finds_the_same_content_reads_unchanged() {
        let (conn, log) = fake::connection(vec![
            status(409, "AlreadyExists", "secrets \"cacerts\" already exists"),
            (200, stored(secret("QQ=="), "4")),
        ]);
        let write =
            Write::create(Kind::Secret, secret("QQ==")).same(Same::Fields(&["type", "data"]));
        let mut plan = secret_plan(write, Action::Create);
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(
            log.lines(),
            [
                "POST /api/v1/namespaces/istio-system/secrets",
                "GET /api/v1/namespaces/istio-system/secrets/cacerts"
            ]
        );
        assert_eq!(plan.changes[0].words(), "unchanged");
    }

    #[tokio::test]
    async fn create_that_finds_other_content_is_a_race_with_what_is_stored() {
        let (conn, _log) = fake::connection(vec![
            status(409, "AlreadyExists", "already exists"),
            (200, stored(secret("Qg=="), "4")),
        ]);
        let write =
            Write::create(Kind::Secret, secret("QQ==")).same(Same::Fields(&["type", "data"]));
        let mut plan = secret_plan(write, Action::Create);
        let failure = execute(&conn, &mut plan, DryRun::None).await.unwrap_err();
        let Error::Raced {
            current: Some(current),
            ..
        } = failure.error
        else {
            panic!("{:?}", failure.error)
        };
        assert_eq!(current["data"]["ca-key.pem"], "Qg==");
        assert_eq!(plan.changes[0].words(), "failed to create");
    }

    #[tokio::test]
    async fn create_or_replace_replaces_guarded_by_what_it_read() {
        let (conn, log) = fake::connection(vec![
            status(409, "AlreadyExists", "already exists"),
            (200, stored(secret("Qg=="), "4")),
            (200, stored(secret("QQ=="), "5")),
        ]);
        let write = Write::create_or_replace(Kind::Secret, secret("QQ=="))
            .same(Same::Fields(&["type", "data"]));
        let mut plan = secret_plan(write, Action::Create);
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        let put = &log.all()[2];
        assert_eq!(
            put.line(),
            "PUT /api/v1/namespaces/istio-system/secrets/cacerts"
        );
        assert_eq!(put.body["metadata"]["resourceVersion"], "4");
        assert_eq!(put.body["data"]["ca-key.pem"], "QQ==");
        assert_eq!(plan.changes[0].words(), "updated");
    }

    #[tokio::test]
    async fn replace_that_conflicts_is_judged_by_what_is_stored_now() {
        let mut wanted = secret("QQ==");
        wanted["metadata"]["resourceVersion"] = json!("4");
        let write = Write::replace(Kind::Secret, wanted).same(Same::Fields(&["type", "data"]));
        assert_eq!(
            write.precondition,
            Precondition::ResourceVersion("4".into())
        );
        let (conn, _log) = fake::connection(vec![
            status(409, "Conflict", "the object has been modified"),
            (200, stored(secret("QQ=="), "6")),
        ]);
        let mut plan = secret_plan(write.clone(), Action::Update);
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        assert_eq!(plan.changes[0].words(), "unchanged");
        let (conn, _log) = fake::connection(vec![
            status(409, "Conflict", "the object has been modified"),
            (200, stored(secret("Qw=="), "6")),
        ]);
        let mut plan = secret_plan(write, Action::Update);
        let failure = execute(&conn, &mut plan, DryRun::None).await.unwrap_err();
        assert!(matches!(failure.error, Error::Raced { .. }));
        assert_eq!(plan.changes[0].words(), "failed to update");
    }

    #[tokio::test]
    async fn a_plain_create_race_is_reported_unread() {
        let (conn, log) = fake::connection(vec![status(409, "AlreadyExists", "exists")]);
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"}});
        let mut plan = one_row(
            Action::Create,
            Kind::Service,
            Some("n"),
            "s",
            Write::create(Kind::Service, svc),
        );
        let failure = execute(&conn, &mut plan, DryRun::None).await.unwrap_err();
        assert!(matches!(failure.error, Error::Raced { current: None, .. }));
        assert_eq!(log.lines().len(), 1);
    }

    #[tokio::test]
    async fn strategic_patch_and_delete() {
        let (conn, log) = fake::connection(vec![(200, json!({})), status(404, "NotFound", "gone")]);
        let mut plan = Plan::default();
        let dep = Resource::new(Kind::Deployment, "v1");
        plan.push(row(
            Action::Other,
            Kind::Deployment,
            Some("istio-system"),
            "istiod",
            Write::patch(dep, PatchType::Strategic, json!({"spec": {}})),
        ));
        plan.push(row(
            Action::Delete,
            Kind::WorkloadEntry,
            Some("vm"),
            "vm-1",
            Write::delete(Resource::new(Kind::WorkloadEntry, "v1beta1")).after(0),
        ));
        execute(&conn, &mut plan, DryRun::None).await.unwrap();
        let seen = log.all();
        assert_eq!(
            seen[0].line(),
            "PATCH /apis/apps/v1/namespaces/istio-system/deployments/istiod"
        );
        assert_eq!(
            seen[0].content_type,
            "application/strategic-merge-patch+json"
        );
        assert_eq!(
            seen[1].line(),
            "DELETE /apis/networking.istio.io/v1beta1/namespaces/vm/workloadentries/vm-1"
        );
        assert_eq!(seen[1].body["propagationPolicy"], "Background");
        assert_eq!(plan.changes[0].words(), "done");
        assert_eq!(plan.changes[1].words(), "deleted");
        assert_eq!(plan.changes[1].detail, "was already gone");
    }

    #[test]
    fn waves_put_a_namespace_first_and_follow_after() {
        let ns = |name: &str, action| {
            Change::new(action, Kind::Namespace, None, name)
                .write(Write::apply(Kind::Namespace, namespace(name)))
        };
        let sa = Write::apply(Kind::ServiceAccount, json!({"apiVersion": "v1"}));
        let rows = vec![
            Change::new(Action::Unchanged, Kind::Namespace, None, "istio-system"),
            row(
                Action::Create,
                Kind::Secret,
                Some("istio-system"),
                "cacerts",
                Write::create(Kind::Secret, json!({})),
            ),
            ns("expandvm", Action::Create),
            row(
                Action::Create,
                Kind::ServiceAccount,
                Some("expandvm"),
                "expandvm",
                sa.clone(),
            ),
            row(
                Action::Other,
                Kind::Deployment,
                Some("istio-system"),
                "istiod",
                Write::patch(
                    Resource::new(Kind::Deployment, "v1"),
                    PatchType::Strategic,
                    json!({}),
                )
                .after(1),
            ),
        ];
        assert_eq!(waves(&rows), [0, 1, 1, 2, 2]);
        let rows = vec![
            ns("istio-system", Action::Create),
            row(
                Action::Create,
                Kind::Secret,
                Some("istio-system"),
                "cacerts",
                Write::create(Kind::Secret, json!({})),
            ),
            row(
                Action::Other,
                Kind::Deployment,
                Some("istio-system"),
                "istiod",
                Write::patch(
                    Resource::new(Kind::Deployment, "v1"),
                    PatchType::Strategic,
                    json!({}),
                )
                .after(1),
            ),
        ];
        assert_eq!(waves(&rows), [1, 2, 3]);
    }

    #[test]
    fn resources_take_the_version_the_object_carries() {
        let r = Resource::of(
            Kind::WorkloadGroup,
            &json!({"apiVersion": "networking.istio.io/v1alpha3"}),
        );
        assert_eq!(r.version, "v1alpha3");
        assert_eq!(r.api_version(), "networking.istio.io/v1alpha3");
        assert_eq!(r.name(), "workloadgroups.networking.istio.io");
        assert_eq!(
            r.url_path(Some("vm")),
            "/apis/networking.istio.io/v1alpha3/namespaces/vm/workloadgroups"
        );
        let r = Resource::of(Kind::Namespace, &json!({}));
        assert_eq!(r.url_path(Some("ignored")), "/api/v1/namespaces");
        assert_eq!(
            Resource::new(Kind::Deployment, "v1").name(),
            "deployments.apps"
        );
        assert_eq!(Kind::from_name("Endpoints"), Some(Kind::Endpoints));
        assert_eq!(Resource::of(Kind::DestinationRule, &json!({})).version, "");
    }

    #[tokio::test]
    async fn an_object_without_api_version_is_refused_before_sending() {
        let (conn, log) = fake::connection(vec![]);
        let mut plan = one_row(
            Action::Create,
            Kind::DestinationRule,
            Some("x"),
            "d",
            Write::apply(Kind::DestinationRule, json!({"kind": "DestinationRule"})),
        );
        let failure = execute(&conn, &mut plan, DryRun::None).await.unwrap_err();
        assert!(failure.error.to_string().contains("names no apiVersion"));
        assert!(log.all().is_empty());
    }

    #[test]
    fn overlay_merges_maps_and_sets_owned_paths() {
        let stored = json!({"metadata": {"labels": {"a": "1"}, "uid": "u"},
                            "spec": {"list": [1, 2], "m": {"x": 1}, "keep": true}});
        let wanted = json!({"metadata": {"labels": {"b": "2"}},
                            "spec": {"list": [3], "m": {"y": 2}, "empty": {}}});
        let merged = overlay(&stored, &wanted, &["/spec/m".into(), "/spec/gone".into()]);
        assert_eq!(
            merged,
            json!({"metadata": {"labels": {"a": "1", "b": "2"}, "uid": "u"},
                                  "spec": {"list": [3], "m": {"y": 2}, "keep": true}})
        );
        assert!(contains(&merged, &wanted));
        assert!(!contains(&stored, &wanted));
        assert!(Same::Contains.holds(&merged, &wanted));
        let mut versioned = wanted.clone();
        versioned["metadata"]["resourceVersion"] = json!("7");
        assert!(
            Same::Contains.holds(&merged, &versioned),
            "the version is no content"
        );
        assert!(!Same::Fields(&["spec"]).holds(&merged, &wanted));
    }
}
