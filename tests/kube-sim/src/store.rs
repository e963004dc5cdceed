//! The object store and the API semantics on it: create, get, list, update, patch, apply, delete.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use crate::cidr::Cidr;
use crate::controllers::Controllers;
use crate::fields::{self, Scope, Writer};
use crate::kinds;
use crate::levers::{ContinueExpiry, ScenarioLevers};
use crate::patch;
use crate::registry::{Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::util::{self, name_of, namespace_of};
use crate::version::{ApiSurface, CRD_KEY, KubeVersion, RuntimeConfig};

/// Storage key: (`group/plural`, namespace or "", name). BTreeMap order is etcd's key order.
pub type ObjKey = (String, String, String);

/// How the apiserver treats fields a schema does not declare (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (the server default).
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

/// Per-request write options from the query string.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: run everything, store nothing.
    pub dry_run: bool,
    /// `fieldManager` (or one derived from the User-Agent).
    pub manager: String,
    /// Whether the client named the field manager itself.
    pub manager_explicit: bool,
    /// `force=true` for server-side apply.
    pub force: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
}

/// Query options of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue` token.
    pub continue_token: Option<String>,
}

/// What a write produced: the object, its HTTP status, and warnings for the `Warning` header.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object as stored (or as it would be, for dry runs).
    pub object: Value,
    /// 200 or 201.
    pub code: u16,
    /// Warnings (e.g. unknown fields dropped).
    pub warnings: Vec<String>,
}

/// One storage change, for watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// `group/plural` of the object.
    pub resource: String,
    /// The object after the change (before, for deletions, with a fresh resourceVersion).
    pub object: Value,
}

/// The whole cluster state.
pub struct State {
    /// Servable types.
    pub registry: Registry,
    /// All objects.
    pub objects: BTreeMap<ObjKey, Value>,
    /// Cluster-wide resourceVersion counter.
    pub rv: u64,
    /// Service CIDR ClusterIPs come from.
    pub cidr: Cidr,
    /// Emulated controllers' state.
    pub controllers: Controllers,
    /// Changes, for watchers (sending without receivers is a no-op).
    pub events: tokio::sync::broadcast::Sender<Event>,
    /// Set while objects are written outside the API (scenario, controllers): checks that
    /// guard API clients (ClusterIP range) are relaxed, since a dump is taken as it is.
    pub loading: bool,
    /// Keys of objects that have ownerReferences (what the garbage collector looks at).
    owned: std::collections::BTreeSet<ObjKey>,
    /// The Kubernetes version served: what is served and how it behaves.
    pub version: KubeVersion,
    /// APIs turned on beyond the version's defaults.
    pub runtime: RuntimeConfig,
    /// When `continue` tokens expire.
    pub continue_expiry: ContinueExpiry,
    /// How long a deleted namespace stays `Terminating` (zero: deleted at once).
    pub namespace_finalize_delay: Duration,
    /// Namespaces being terminated, and when their finalizer is done.
    pub terminating: BTreeMap<String, Instant>,
    /// The ClusterIPs Services hold and an offset in the Service range below which every
    /// address is taken: what allocating the lowest free one needs, kept up to date as Services
    /// are created and dropped (`None`) on any other Service write, so loading 20 000
    /// Services is not 20 000 scans of all of them.
    pub cluster_ips: Option<(std::collections::HashSet<String>, u128)>,
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    util::map_at(obj, &["metadata"])
}

fn strip_for_compare(obj: &Value) -> Value {
    let mut o = obj.clone();
    // The same object read through another served version is still the same object.
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
    }
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    o
}

fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// A decoded `continue` token: where the next page starts, and what its expiry is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Continue {
    /// Namespace and name of the last object already returned.
    after: (String, String),
    /// The list's resourceVersion; -1 is the apiserver's "continue at the latest revision"
    /// token handed out with an `Expired` error, which never expires.
    rv: i64,
    /// When the list's first page was served (ms since the epoch).
    started_ms: u64,
    /// How many continued pages this list has had before this one.
    pages: u32,
    /// How many objects were left after the page that handed out this token, as counted then:
    /// counted once per list, not once per page (`None`: count again).
    remaining: Option<u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Decodes a `continue` token into the key after which the next page starts.
fn decode_continue(token: &str) -> Result<Continue, ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v.get("start").and_then(Value::as_array).ok_or_else(bad)?;
    let after = match (
        start.first().and_then(Value::as_str),
        start.get(1).and_then(Value::as_str),
    ) {
        (Some(ns), Some(name)) => (ns.to_string(), name.to_string()),
        _ => return Err(bad()),
    };
    Ok(Continue {
        after,
        rv: v.get("rv").and_then(Value::as_i64).unwrap_or(0),
        started_ms: v.get("t").and_then(Value::as_u64).unwrap_or(0),
        pages: v
            .get("p")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        remaining: v.get("r").and_then(Value::as_u64),
    })
}

fn encode_continue(c: &Continue) -> String {
    URL_SAFE_NO_PAD.encode(
        json!({"v": "meta.k8s.io/v1", "rv": c.rv, "start": [c.after.0, c.after.1],
               "t": c.started_ms, "p": c.pages, "r": c.remaining})
        .to_string(),
    )
}

/// The message of the 410 for an expired continue token when a fresh token can be offered
/// (apiserver@kubernetes-1.14.0 pkg/storage/etcd3/errors.go:39-45 `inconsistentContinue`, the
/// error built at :68-69 with `ListMeta.Continue` set to a token for revision -1; the same text
/// through apiserver@kubernetes-1.33.0 pkg/storage/etcd3/errors.go:57).
pub const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

impl State {
    /// An empty cluster (no namespaces yet) whose Services get IPs from `cidr`.
    pub fn new(cidr: Cidr) -> Self {
        State {
            registry: Registry::new(),
            objects: BTreeMap::new(),
            rv: 0,
            cidr,
            controllers: Controllers::default(),
            events: tokio::sync::broadcast::channel(4096).0,
            loading: false,
            owned: std::collections::BTreeSet::new(),
            version: KubeVersion::default(),
            runtime: RuntimeConfig::default(),
            continue_expiry: ContinueExpiry::Never,
            namespace_finalize_delay: Duration::ZERO,
            terminating: BTreeMap::new(),
            cluster_ips: None,
        }
    }

    /// Sets the version served and the API-semantics levers (before anything is loaded, so
    /// defaulting follows the version).
    pub fn configure(&mut self, version: KubeVersion, levers: &ScenarioLevers) {
        self.version = version;
        self.runtime = levers.runtime;
        self.continue_expiry = levers.continue_expiry;
        self.namespace_finalize_delay = levers.namespace_finalize_delay;
    }

    /// What this version serves.
    pub fn surface(&self) -> ApiSurface<'_> {
        ApiSurface::new(&self.registry, self.version, self.runtime)
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// The stored object, as stored.
    pub fn get_obj(&self, resource: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(resource.to_string(), ns.to_string(), name.to_string()))
    }

    /// Objects of one resource, in one namespace or all (`None`).
    pub fn iter_resource<'a>(
        &'a self,
        resource: &'a str,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        let start = (
            resource.to_string(),
            ns.unwrap_or("").to_string(),
            String::new(),
        );
        self.objects
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(k, _)| k.0 == resource && ns.is_none_or(|n| k.1 == n))
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.get_obj("/namespaces", "", ns).is_some()
    }

    /// The object as served at `version` (CRDs are converted to the v1beta1 shape there).
    pub fn output(obj: &Value, rt: &ResourceType, version: &str) -> Value {
        let mut o = if rt.key() == CRD_KEY && version == "v1beta1" {
            kinds::crd_to_v1beta1(obj)
        } else {
            obj.clone()
        };
        o["apiVersion"] = json!(rt.api_version(version));
        o["kind"] = json!(rt.kind);
        o
    }

    /// Converts a body sent at a version other than the storage one into the stored shape
    /// (a v1beta1 CRD becomes a v1 CRD; other kinds are stored as sent).
    fn to_storage(rt: &ResourceType, version: &str, obj: &mut Value) -> Result<(), ApiError> {
        if rt.key() == CRD_KEY && version == "v1beta1" {
            *obj = kinds::crd_from_v1beta1(obj).map_err(|e| {
                ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    name_of(obj),
                    &[("spec".into(), "FieldValueInvalid".into(), e)],
                )
            })?;
        }
        Ok(())
    }

    /// The 403 the `NamespaceLifecycle` admission plugin gives a create in a namespace that is
    /// being terminated (apiserver@kubernetes-1.33.0
    /// pkg/admission/plugin/namespace/lifecycle/admission.go:169-182; the cause since 1.17).
    fn check_namespace_active(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        if !rt.namespaced || !self.terminating.contains_key(ns) {
            return Ok(());
        }
        let mut e = ApiError::forbidden_msg(
            &rt.group,
            &rt.plural,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        );
        if self.version.namespace_terminating_cause()
            && let Some(d) = e.details.as_mut()
        {
            d["causes"] = json!([{"reason": "NamespaceTerminating",
                "message": format!("namespace {ns} is being terminated"),
                "field": "metadata.namespace"}]);
        }
        Err(e)
    }

    /// GET of one object.
    pub fn get(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get_obj(&rt.key(), ns, name)
            .map(|o| Self::output(o, rt, version))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// One page of a LIST: the matching objects (as stored) and the list metadata
    /// (`resourceVersion`, and `continue`/`remainingItemCount` when more follow).
    pub fn list_page(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<(Vec<&Value>, Value), ApiError> {
        let key = rt.key();
        let token = opts
            .continue_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(decode_continue)
            .transpose()?;
        if let Some(c) = &token {
            self.check_continue(c)?;
        }
        let after = token.as_ref().map(|c| c.after.clone());
        let start = match &after {
            Some((n, name)) => Bound::Excluded((key.clone(), n.clone(), name.clone())),
            None => Bound::Included((key.clone(), ns.unwrap_or("").to_string(), String::new())),
        };
        let filtering = !opts.labels.is_empty() || opts.fields != FieldSelector::default();
        // The first key past the resource (or its namespace): every string with the prefix
        // sorts before the prefix plus NUL, so the range holds exactly the resource's objects
        // and counting what is left compares no key.
        let end = match ns {
            Some(n) => (key.clone(), format!("{n}\0"), String::new()),
            None => (format!("{key}\0"), String::new(), String::new()),
        };
        // A token from another list may start past the end (`range` panics on that): empty.
        let past_end = match &start {
            Bound::Excluded(k) | Bound::Included(k) => *k >= end,
            Bound::Unbounded => false,
        };
        let range = if past_end {
            self.objects
                .range((Bound::Included(end.clone()), Bound::Excluded(end)))
        } else {
            self.objects.range((start, Bound::Excluded(end)))
        };
        let mut iter = range.filter(|(_, o)| opts.labels.matches(o) && opts.fields.matches(o));
        let mut items = Vec::new();
        let mut last: Option<&ObjKey> = None;
        for (k, o) in iter.by_ref() {
            items.push(o);
            last = Some(k);
            if opts.limit > 0 && items.len() >= opts.limit {
                break;
            }
        }
        let mut meta = json!({"resourceVersion": self.rv.to_string()});
        if opts.limit > 0 && items.len() >= opts.limit {
            // Whether more follow decides the `continue`: one more match says it. Filtered, the
            // apiserver gives no `remainingItemCount`; unfiltered, the count is taken on the
            // first page and carried in the token (counting on every page made paging a list
            // quadratic), counted again if writes since have made it wrong.
            let more = iter.next().is_some();
            let remaining = match token.as_ref().and_then(|c| c.remaining) {
                _ if !more || filtering => u64::from(more),
                Some(r) if r > items.len() as u64 => r - items.len() as u64,
                _ => 1 + iter.count() as u64,
            };
            if more {
                let k = last.expect("a full page has a last item");
                let next = match &token {
                    // A continued list keeps its start; a -1 token starts a new one.
                    Some(c) if c.rv >= 0 => Continue {
                        after: (k.1.clone(), k.2.clone()),
                        rv: c.rv,
                        started_ms: c.started_ms,
                        pages: c.pages + 1,
                        remaining: (!filtering).then_some(remaining),
                    },
                    _ => Continue {
                        after: (k.1.clone(), k.2.clone()),
                        rv: i64::try_from(self.rv).unwrap_or(i64::MAX),
                        started_ms: now_ms(),
                        pages: 0,
                        remaining: (!filtering).then_some(remaining),
                    },
                };
                meta["continue"] = json!(encode_continue(&next));
                if !filtering {
                    meta["remainingItemCount"] = json!(remaining);
                }
            }
        }
        Ok((items, meta))
    }

    /// A token past the expiry lever is refused as etcd compaction makes the apiserver refuse it:
    /// 410 `Expired`, with a token to continue at the latest revision in `metadata.continue`.
    fn check_continue(&self, c: &Continue) -> Result<(), ApiError> {
        if c.rv < 0 {
            return Ok(());
        }
        let expired = match self.continue_expiry {
            ContinueExpiry::Never => false,
            ContinueExpiry::After(d) => {
                now_ms().saturating_sub(c.started_ms)
                    > u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }
            ContinueExpiry::AfterPages(n) => c.pages >= n,
        };
        if !expired {
            return Ok(());
        }
        let fresh = Continue {
            after: c.after.clone(),
            rv: -1,
            started_ms: 0,
            pages: 0,
            remaining: None,
        };
        let mut e = ApiError::expired(CONTINUE_EXPIRED);
        e.metadata = Some(json!({"continue": encode_continue(&fresh)}));
        Err(e)
    }

    /// Refuses field selectors on fields the apiserver does not index for this kind.
    pub fn check_field_selector(
        &self,
        rt: &ResourceType,
        version: &str,
        opts: &ListOpts,
        raw_labels: &str,
        raw_fields: &str,
    ) -> Result<(), ApiError> {
        let crd = (!rt.builtin).then(|| {
            self.get_obj(
                "apiextensions.k8s.io/customresourcedefinitions",
                "",
                &format!("{}.{}", rt.plural, rt.group),
            )
        });
        let allowed = kinds::selectable_fields(rt, crd.flatten(), version);
        match opts
            .fields
            .paths()
            .into_iter()
            .find(|p| !allowed.contains(p))
        {
            None => Ok(()),
            Some(bad) => Err(ApiError::bad_request(format!(
                "Unable to find \"{}/{version}, Resource={}\" that match label selector \"{raw_labels}\", field selector \"{raw_fields}\": field label not supported: {bad}",
                rt.group, rt.plural
            ))),
        }
    }

    /// LIST, serialised straight into the response body (fast for large lists).
    pub fn list(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<Vec<u8>, ApiError> {
        let api_version = rt.api_version(version);
        let (items, meta) = self.list_page(rt, ns, opts)?;
        let mut body = Vec::with_capacity(4096 + items.len() * 512);
        write!(
            body_writer(&mut body),
            "{{\"apiVersion\":{},\"kind\":{},\"items\":[",
            json!(api_version),
            json!(rt.list_kind)
        )
        .expect("writing to a Vec cannot fail");
        for (i, o) in items.into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            if o.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str()) {
                serde_json::to_writer(&mut body, o).expect("serialising a Value cannot fail");
            } else {
                serde_json::to_writer(&mut body, &Self::output(o, rt, version))
                    .expect("serialising a Value cannot fail");
            }
        }
        write!(body_writer(&mut body), "],\"metadata\":{meta}}}")
            .expect("writing to a Vec cannot fail");
        Ok(body)
    }

    fn check_kind(rt: &ResourceType, version: &str, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of the request must be a {} object",
                rt.kind
            )));
        }
        let want = rt.api_version(version);
        match obj.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => obj["apiVersion"] = json!(want),
            Some(v) if v != want => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want})"
                )));
            }
            Some(_) => {}
        }
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") => obj["kind"] = json!(rt.kind),
            Some(k) if k != rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn check_namespace(rt: &ResourceType, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
        let m = meta_mut(obj);
        if rt.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    m.insert("namespace".into(), json!(ns));
                }
                Some(n) if n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                Some(_) => {}
            }
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
        let label_only =
            rt.group.is_empty() && (rt.plural == "namespaces" || rt.plural == "services");
        let ok = if label_only {
            util::is_dns_label(name)
        } else {
            util::is_dns_subdomain(name)
        };
        if ok {
            return Ok(());
        }
        let msg = if label_only {
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            )
        } else {
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            )
        };
        Err(ApiError::invalid(
            &rt.group,
            &rt.kind,
            name,
            &[("metadata.name".into(), "FieldValueInvalid".into(), msg)],
        ))
    }

    /// Validates/prunes a custom resource against its version's schema.
    fn check_schema(
        rt: &ResourceType,
        version: &str,
        obj: &mut Value,
        fv: FieldValidation,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let Some(schema) = rt.schemas.get(version) else {
            return Ok(());
        };
        let unknown = crate::schema::prune(schema, obj);
        if !unknown.is_empty() {
            match fv {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|p| format!("unknown field \"{p}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|p| format!("unknown field \"{p}\"")));
                }
                FieldValidation::Ignore => {}
            }
        }
        let errors = crate::schema::validate(schema, obj);
        if errors.is_empty() {
            return Ok(());
        }
        let causes: Vec<(String, String, String)> = errors
            .into_iter()
            .map(|e| (e.path, e.reason, e.message))
            .collect();
        Err(ApiError::invalid(
            &rt.group,
            &rt.kind,
            name_of(obj),
            &causes,
        ))
    }

    /// Type-specific defaulting and validation shared by every write path.
    fn prepare(
        &mut self,
        rt: &ResourceType,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOpts,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        if rt.builtin {
            Self::check_typed(rt, obj, opts.field_validation, warnings)?;
        } else {
            Self::check_schema(rt, version, obj, opts.field_validation, warnings)?;
        }
        kinds::prepare(self, rt, obj, old, opts.dry_run)
    }

    /// Strict decoding of a built-in kind (see [`crate::typed`]).
    fn check_typed(
        rt: &ResourceType,
        obj: &mut Value,
        fv: FieldValidation,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        match crate::typed::decode(&rt.group, &rt.plural, obj) {
            None => Ok(()),
            Some(crate::typed::Decode::Invalid(e)) => Err(ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
                kind = rt.kind,
                v = rt.versions[0]
            ))),
            Some(crate::typed::Decode::Unknown(paths)) if paths.is_empty() => Ok(()),
            Some(crate::typed::Decode::Unknown(paths)) => {
                let list: Vec<String> = paths
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect();
                match fv {
                    FieldValidation::Strict => {
                        return Err(ApiError::bad_request(format!(
                            "strict decoding error: {}",
                            list.join(", ")
                        )));
                    }
                    FieldValidation::Warn => warnings.extend(list),
                    FieldValidation::Ignore => {}
                }
                for p in &paths {
                    crate::typed::remove(obj, p);
                }
                Ok(())
            }
        }
    }

    /// POST: create an object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        Self::check_kind(rt, version, &mut obj)?;
        Self::to_storage(rt, version, &mut obj)?;
        Self::check_namespace(rt, ns, &mut obj)?;
        let mut name = name_of(&obj).to_string();
        if name.is_empty() {
            match util::str_at(&obj, &["metadata", "generateName"]) {
                Some(g) if !g.is_empty() => {
                    name = format!("{g}{}", util::random_suffix(5));
                    meta_mut(&mut obj).insert("name".into(), json!(name));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &rt.group,
                        &rt.kind,
                        "",
                        &[(
                            "metadata.name".into(),
                            "FieldValueRequired".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        Self::validate_name(rt, &name)?;
        if rt.namespaced && !self.namespace_exists(ns) {
            return Err(ApiError::not_found("", "namespaces", ns));
        }
        self.check_namespace_active(rt, ns, &name)?;
        if self
            .get_obj(&rt.key(), if rt.namespaced { ns } else { "" }, &name)
            .is_some()
        {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        {
            let m = meta_mut(&mut obj);
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
                "deletionTimestamp",
                "selfLink",
            ] {
                m.remove(k);
            }
        }
        if rt.status_subresource
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        let mut warnings = Vec::new();
        self.prepare(rt, version, &mut obj, None, opts, &mut warnings)?;
        let now = util::now_rfc3339();
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), json!(util::new_uid()));
            m.insert("creationTimestamp".into(), json!(now));
            if rt.has_generation {
                m.insert("generation".into(), json!(1));
            }
        }
        let api_version = rt.api_version(version);
        fields::record_update(
            None,
            &mut obj,
            &Writer {
                manager: &opts.manager,
                api_version: &api_version,
                builtin: rt.builtin,
                scope: Scope::Main {
                    skip_status: rt.status_subresource,
                },
                time: &now,
            },
        );
        Ok(self.finish_create(rt, version, obj, opts, warnings))
    }

    fn finish_create(
        &mut self,
        rt: &ResourceType,
        version: &str,
        mut obj: Value,
        opts: &WriteOpts,
        warnings: Vec<String>,
    ) -> Written {
        if opts.dry_run {
            return Written {
                object: Self::output(&obj, rt, version),
                code: 201,
                warnings,
            };
        }
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv));
        let stored = self.store(rt, obj, "ADDED");
        self.after_write(rt, &stored, true);
        Written {
            object: Self::output(&stored, rt, version),
            code: 201,
            warnings,
        }
    }

    /// Stores the object (in the preferred version) and records the event.
    fn store(&mut self, rt: &ResourceType, mut obj: Value, event: &'static str) -> Value {
        obj["apiVersion"] = json!(rt.api_version(&rt.versions[0]));
        let key = (
            rt.key(),
            namespace_of(&obj).to_string(),
            name_of(&obj).to_string(),
        );
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Event {
                kind: event,
                resource: rt.key(),
                object: obj.clone(),
            });
        }
        let has_owner = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|o| !o.is_empty());
        if has_owner {
            self.owned.insert(key.clone());
        } else {
            self.owned.remove(&key);
        }
        if key.0 == "/services" {
            self.index_cluster_ip(&obj, event == "ADDED");
        }
        self.objects.insert(key, obj.clone());
        obj
    }

    /// Keeps [`State::cluster_ips`] right: a created Service's address is added, any other
    /// Service write drops the index (rebuilt on the next allocation).
    fn index_cluster_ip(&mut self, svc: &Value, created: bool) {
        let Some((used, from)) = self.cluster_ips.as_mut().filter(|_| created) else {
            self.cluster_ips = None;
            return;
        };
        if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
            used.insert(ip.to_string());
        }
        while self
            .cidr
            .nth(*from)
            .is_some_and(|a| used.contains(&a.to_string()))
        {
            *from += 1;
        }
    }

    /// Side effects of a stored write that are part of the apiserver itself.
    fn after_write(&mut self, rt: &ResourceType, obj: &Value, created: bool) {
        kinds::after_write(self, rt, obj, created);
        crate::controllers::reconcile(self);
    }

    /// PUT (`sub` None) or PUT of the `status` subresource.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let old = self
            .get_obj(&rt.key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        Self::check_kind(rt, version, &mut body)?;
        Self::to_storage(rt, version, &mut body)?;
        let body_name = name_of(&body).to_string();
        if body_name.is_empty() {
            meta_mut(&mut body).insert("name".into(), json!(name));
        } else if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        Self::check_namespace(rt, ns, &mut body)?;
        match util::str_at(&body, &["metadata", "resourceVersion"]) {
            Some(rv)
                if !rv.is_empty()
                    && Some(rv) != util::str_at(&old, &["metadata", "resourceVersion"]) =>
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    ApiError::STALE,
                ));
            }
            // The current version: the update goes ahead.
            Some(rv) if !rv.is_empty() => {}
            _ if !rt.builtin => {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    name,
                    &[(
                        "metadata.resourceVersion".into(),
                        "FieldValueInvalid".into(),
                        "Invalid value: 0x0: must be specified for an update".into(),
                    )],
                ));
            }
            _ => {}
        }
        self.replace(rt, version, sub, &old, body, opts, false)
    }

    /// The common tail of PUT, PATCH and apply: carry what the client may not change, default,
    /// validate, bump generation and resourceVersion, store.
    #[allow(clippy::too_many_arguments)]
    fn replace(
        &mut self,
        rt: &ResourceType,
        version: &str,
        sub: Option<&str>,
        old: &Value,
        body: Value,
        opts: &WriteOpts,
        fields_done: bool,
    ) -> Result<Written, ApiError> {
        let status_write = sub == Some("status");
        let mut user_fields = false;
        let mut new = if status_write {
            let mut n = old.clone();
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            if fields_done && let Some(mf) = body.pointer("/metadata/managedFields") {
                meta_mut(&mut n).insert("managedFields".into(), mf.clone());
            }
            n
        } else {
            let mut n = body;
            if rt.status_subresource {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(o) = n.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            n
        };
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "deletionTimestamp",
            ] {
                match old_meta.get(k) {
                    Some(v) => m.insert(k.to_string(), v.clone()),
                    None => m.remove(k),
                };
            }
            // A client may rewrite managedFields itself (kubectl does when it moves client-side
            // apply ownership to server-side apply); the apiserver then keeps them as sent and
            // records no ownership change for that request.
            let explicit = !fields_done
                && m.get("managedFields")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
                && m.get("managedFields") != old_meta.get("managedFields");
            if explicit {
                user_fields = true;
            } else if !fields_done {
                match old_meta.get("managedFields") {
                    Some(v) => m.insert("managedFields".into(), v.clone()),
                    None => m.remove("managedFields"),
                };
            }
        }
        let mut warnings = Vec::new();
        if !status_write {
            self.prepare(rt, version, &mut new, Some(old), opts, &mut warnings)?;
        }
        if rt.has_generation && spec_part(&new) != spec_part(old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta_mut(&mut new).insert("generation".into(), json!(g));
            kinds::after_generation_bump(rt, &mut new);
        }
        let now = util::now_rfc3339();
        let api_version = rt.api_version(version);
        if !fields_done && !user_fields {
            fields::record_update(
                Some(old),
                &mut new,
                &Writer {
                    manager: &opts.manager,
                    api_version: &api_version,
                    builtin: rt.builtin,
                    scope: if status_write {
                        Scope::Status
                    } else {
                        Scope::Main {
                            skip_status: rt.status_subresource,
                        }
                    },
                    time: &now,
                },
            );
        }
        // A write that changes nothing keeps the resourceVersion, as etcd3's GuaranteedUpdate does.
        if strip_for_compare(&new) == strip_for_compare(old) {
            return Ok(Written {
                object: Self::output(old, rt, version),
                code: 200,
                warnings,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                object: Self::output(&new, rt, version),
                code: 200,
                warnings,
            });
        }
        let rv = self.next_rv();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
        let stored = self.store(rt, new, "MODIFIED");
        self.after_write(rt, &stored, false);
        Ok(Written {
            object: Self::output(&stored, rt, version),
            code: 200,
            warnings,
        })
    }

    /// PATCH of any supported type; apply patches create missing objects.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        content_type: &str,
        body: &[u8],
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        let accepted = self.version.patch_types(rt.builtin);
        if !accepted.contains(&ct) {
            // Built-in kinds are go-restful routes whose `Consumes` lists the patch types: the
            // router refuses others before the handler runs. Custom resources are served by the
            // apiextensions handler, which answers with the negotiation error.
            return Err(if rt.builtin {
                ApiError::restful_unsupported_media_type()
            } else {
                ApiError::unsupported_media_type(&accepted)
            });
        }
        if ct == "application/apply-patch+yaml" {
            return self.apply(rt, version, ns, name, sub, body, opts);
        }
        let old = self
            .get_obj(&rt.key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let mut target = Self::output(&old, rt, version);
        let result = match ct {
            "application/json-patch+json" => patch::json_patch(&mut target, &patch),
            "application/merge-patch+json" => {
                patch::merge_patch(&mut target, &patch);
                Ok(())
            }
            "application/strategic-merge-patch+json" => {
                patch::strategic_merge_patch(&mut target, &patch)
            }
            _ => return Err(ApiError::unsupported_media_type(&accepted)),
        };
        result.map_err(|e| {
            ApiError::invalid(
                &rt.group,
                &rt.kind,
                name,
                &[(String::new(), "FieldValueInvalid".into(), e)],
            )
        })?;
        if let Some(rv) = util::str_at(&target, &["metadata", "resourceVersion"])
            && Some(rv) != util::str_at(&old, &["metadata", "resourceVersion"])
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                ApiError::STALE,
            ));
        }
        Self::check_kind(rt, version, &mut target)?;
        Self::to_storage(rt, version, &mut target)?;
        if name_of(&target) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&target)
            )));
        }
        Self::check_namespace(rt, ns, &mut target)?;
        self.replace(rt, version, sub, &old, target, opts, false)
    }

    /// Server-side apply.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        body: &[u8],
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        if !opts.manager_explicit {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                &[(
                    "fieldManager".into(),
                    "FieldValueRequired".into(),
                    "Required value: is required for apply patch".into(),
                )],
            ));
        }
        let mut applied = util::parse_json_or_yaml(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::bad_request("the apply patch must be an object"));
        }
        if applied
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            || applied
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        {
            return Err(ApiError::bad_request(
                "invalid object type: apply patches must set apiVersion and kind",
            ));
        }
        Self::check_kind(rt, version, &mut applied)?;
        match name_of(&applied) {
            "" => {
                meta_mut(&mut applied).insert("name".into(), json!(name));
            }
            n if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        Self::check_namespace(rt, ns, &mut applied)?;
        {
            let m = meta_mut(&mut applied);
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                m.remove(k);
            }
        }
        let status_write = sub == Some("status");
        let now = util::now_rfc3339();
        let api_version = rt.api_version(version);
        let writer = Writer {
            manager: &opts.manager,
            api_version: &api_version,
            builtin: rt.builtin,
            scope: if status_write {
                Scope::Status
            } else {
                Scope::Main {
                    skip_status: rt.status_subresource,
                }
            },
            time: &now,
        };
        let live = self.get_obj(&rt.key(), ns, name).cloned();
        let Some(live) = live else {
            if status_write {
                return Err(ApiError::not_found(&rt.group, &rt.plural, name));
            }
            if rt.namespaced && !self.namespace_exists(ns) {
                return Err(ApiError::not_found("", "namespaces", ns));
            }
            Self::validate_name(rt, name)?;
            self.check_namespace_active(rt, ns, name)?;
            if rt.status_subresource
                && let Some(o) = applied.as_object_mut()
            {
                o.remove("status");
            }
            let mut obj = fields::apply(None, &applied, &writer, opts.force)
                .map_err(|c| ApiError::apply_conflicts(&c))?;
            Self::to_storage(rt, version, &mut obj)?;
            let mut warnings = Vec::new();
            self.prepare(rt, version, &mut obj, None, opts, &mut warnings)?;
            {
                let m = meta_mut(&mut obj);
                m.insert("uid".into(), json!(util::new_uid()));
                m.insert("creationTimestamp".into(), json!(now));
                if rt.has_generation {
                    m.insert("generation".into(), json!(1));
                }
            }
            return Ok(self.finish_create(rt, version, obj, opts, warnings));
        };
        let live_out = Self::output(&live, rt, version);
        let mut merged = fields::apply(Some(&live_out), &applied, &writer, opts.force)
            .map_err(|c| ApiError::apply_conflicts(&c))?;
        Self::to_storage(rt, version, &mut merged)?;
        self.replace(rt, version, sub, &live, merged, opts, true)
    }

    /// DELETE of one object.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        body: Option<&Value>,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let old = self
            .get_obj(&rt.key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if let Some(pre) = body.and_then(|b| b.get("preconditions")) {
            for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = pre.get(field).and_then(Value::as_str) {
                    let have = util::str_at(&old, &["metadata", field]).unwrap_or("");
                    if want != have {
                        return Err(ApiError::conflict(
                            &rt.group,
                            &rt.plural,
                            name,
                            &format!(
                                "Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
                            ),
                        ));
                    }
                }
            }
        }
        if rt.key() == "/namespaces" && ["default", "kube-system", "kube-public"].contains(&name) {
            return Err(ApiError::forbidden_msg(
                "",
                "namespaces",
                name,
                "this namespace may not be deleted",
            ));
        }
        let mut shown = Self::output(&old, rt, version);
        if rt.key() == "/namespaces" {
            if self.terminating.contains_key(name) {
                // Deleting a Terminating namespace again changes nothing.
                return Ok(Written {
                    object: shown,
                    code: 200,
                    warnings: Vec::new(),
                });
            }
            meta_mut(&mut shown).insert("deletionTimestamp".into(), json!(util::now_rfc3339()));
            shown["status"] = json!({"phase": "Terminating"});
            if !opts.dry_run && !self.namespace_finalize_delay.is_zero() {
                // The namespace registry's first DELETE only marks the namespace (deletionTimestamp,
                // phase Terminating) while `spec.finalizers: [kubernetes]` stays until the namespace
                // controller has emptied it; the object goes when the finalizer is removed.
                let rv = self.next_rv();
                meta_mut(&mut shown).insert("resourceVersion".into(), json!(rv));
                let stored = self.store(rt, shown, "MODIFIED");
                self.terminating.insert(
                    name.to_string(),
                    Instant::now() + self.namespace_finalize_delay,
                );
                return Ok(Written {
                    object: Self::output(&stored, rt, version),
                    code: 200,
                    warnings: Vec::new(),
                });
            }
        }
        if opts.dry_run {
            return Ok(Written {
                object: shown,
                code: 200,
                warnings: Vec::new(),
            });
        }
        let orphan = body
            .and_then(|b| b.get("propagationPolicy"))
            .and_then(Value::as_str)
            == Some("Orphan");
        let uid = util::str_at(&old, &["metadata", "uid"])
            .unwrap_or("")
            .to_string();
        self.remove(&rt.key(), ns, name);
        if !orphan {
            self.collect_garbage(&uid);
        }
        crate::controllers::reconcile(self);
        Ok(Written {
            object: shown,
            code: 200,
            warnings: Vec::new(),
        })
    }

    /// Finishes the termination of namespaces whose finalizer delay has passed (their contents go
    /// with them, then what those owned). Returns whether anything was removed.
    pub fn finalize_namespaces(&mut self, now: Instant) -> bool {
        let due: Vec<String> = self
            .terminating
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for ns in &due {
            self.terminating.remove(ns);
            if let Some(gone) = self.remove("/namespaces", "", ns) {
                let uid = util::str_at(&gone, &["metadata", "uid"])
                    .unwrap_or("")
                    .to_string();
                self.collect_garbage(&uid);
            }
        }
        if !due.is_empty() {
            crate::controllers::reconcile(self);
        }
        !due.is_empty()
    }

    /// When the next Terminating namespace is due, if any.
    pub fn next_finalization(&self) -> Option<Instant> {
        self.terminating.values().min().copied()
    }

    /// Removes an object with the apiserver's own cascades (namespace contents, a CRD's objects).
    pub fn remove(&mut self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let key = (resource.to_string(), ns.to_string(), name.to_string());
        let old = self.objects.remove(&key)?;
        self.owned.remove(&key);
        if key.0 == "/services" {
            self.cluster_ips = None;
        }
        self.rv += 1;
        let mut gone = old.clone();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(self.rv.to_string()));
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Event {
                kind: "DELETED",
                resource: resource.to_string(),
                object: gone,
            });
        }
        match resource {
            "/namespaces" => {
                self.terminating.remove(name);
                let keys: Vec<ObjKey> = self
                    .objects
                    .keys()
                    .filter(|k| k.1 == name)
                    .cloned()
                    .collect();
                for k in keys {
                    self.remove(&k.0, &k.1, &k.2);
                }
            }
            "apiextensions.k8s.io/customresourcedefinitions" => {
                let group = util::str_at(&old, &["spec", "group"]).unwrap_or("");
                let plural = util::str_at(&old, &["spec", "names", "plural"]).unwrap_or("");
                let key = format!("{group}/{plural}");
                if self.registry.get(&key).is_some_and(|t| !t.builtin) {
                    let keys: Vec<ObjKey> = self
                        .iter_resource(&key, None)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in keys {
                        self.remove(&k.0, &k.1, &k.2);
                    }
                    self.registry.remove(&key);
                }
            }
            _ => {}
        }
        Some(old)
    }

    /// The garbage collector: deletes, transitively, what the deleted `uid` owned.
    fn collect_garbage(&mut self, uid: &str) {
        let mut pending = vec![uid.to_string()];
        while let Some(owner) = pending.pop() {
            if owner.is_empty() {
                continue;
            }
            let dependents: Vec<ObjKey> = self
                .owned
                .iter()
                .filter(|k| {
                    self.objects.get(*k).is_some_and(|o| {
                        o.pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .is_some_and(|refs| {
                                refs.iter().any(|r| {
                                    r.get("uid").and_then(Value::as_str) == Some(owner.as_str())
                                })
                            })
                    })
                })
                .cloned()
                .collect();
            for k in dependents {
                if let Some(gone) = self.remove(&k.0, &k.1, &k.2) {
                    pending.push(
                        util::str_at(&gone, &["metadata", "uid"])
                            .unwrap_or("")
                            .to_string(),
                    );
                }
            }
        }
    }

    /// DELETE of a collection (selectors apply).
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &WriteOpts,
    ) -> Result<Vec<u8>, ApiError> {
        let keys: Vec<ObjKey> = self
            .iter_resource(&rt.key(), ns)
            .filter(|(_, o)| list.labels.matches(o) && list.fields.matches(o))
            .map(|(k, _)| k.clone())
            .collect();
        let mut items = Vec::new();
        for k in keys {
            let w = self.delete(rt, version, &k.1, &k.2, None, opts)?;
            items.push(w.object);
        }
        let body = json!({
            "apiVersion": rt.api_version(version),
            "kind": rt.list_kind,
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        });
        Ok(body.to_string().into_bytes())
    }

    /// Creates or replaces an object outside the API (scenario loading, controllers): no
    /// resourceVersion precondition, status kept, uid and timestamps kept when present.
    pub fn upsert(&mut self, mut obj: Value) -> Result<Value, String> {
        if obj.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
            obj = crate::schema::to_v1_crd(&obj)?;
        }
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let rt: Arc<ResourceType> = self.registry.by_kind(&api_version, &kind).ok_or_else(|| {
            format!(
                "{kind} {api_version} is not served (load its CustomResourceDefinition first, or use a kind the sim serves)"
            )
        })?;
        let (_, version) = util::split_api_version(&api_version);
        let version = version.to_string();
        let name = name_of(&obj).to_string();
        if name.is_empty() {
            return Err(format!("a {kind} has no metadata.name"));
        }
        let ns = if rt.namespaced {
            let n = namespace_of(&obj);
            if n.is_empty() {
                "default".to_string()
            } else {
                n.to_string()
            }
        } else {
            String::new()
        };
        if rt.namespaced {
            meta_mut(&mut obj).insert("namespace".into(), json!(ns));
        }
        let old = self.get_obj(&rt.key(), &ns, &name).cloned();
        let mut warnings = Vec::new();
        let opts = WriteOpts {
            field_validation: FieldValidation::Ignore,
            ..WriteOpts::default()
        };
        if !rt.builtin {
            Self::check_schema(
                &rt,
                &version,
                &mut obj,
                opts.field_validation,
                &mut warnings,
            )
            .map_err(|e| e.message)?;
        }
        self.loading = true;
        let prepared = kinds::prepare(self, &rt, &mut obj, old.as_ref(), false);
        self.loading = false;
        prepared.map_err(|e| e.message)?;
        {
            let m = meta_mut(&mut obj);
            if m.get("uid")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                let uid = old
                    .as_ref()
                    .and_then(|o| util::str_at(o, &["metadata", "uid"]).map(str::to_string))
                    .unwrap_or_else(util::new_uid);
                m.insert("uid".into(), json!(uid));
            }
            if m.get("creationTimestamp")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                m.insert("creationTimestamp".into(), json!(util::now_rfc3339()));
            }
            if rt.has_generation && m.get("generation").is_none() {
                m.insert("generation".into(), json!(1));
            }
        }
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv));
        let stored = self.store(&rt, obj, if old.is_some() { "MODIFIED" } else { "ADDED" });
        kinds::after_write(self, &rt, &stored, old.is_none());
        Ok(stored)
    }
}

/// A `fmt::Write` view of a byte buffer.
fn body_writer(buf: &mut Vec<u8>) -> impl std::fmt::Write + '_ {
    struct W<'a>(&'a mut Vec<u8>);
    impl std::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    W(buf)
}

/// Standard base64, as Secret `data` uses.
pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}
