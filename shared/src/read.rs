//! Reading the cluster the way each Kubernetes release serves it: the version that serves each
//! kind, paged lists that survive an expired continue token, and metadata lists that fall back to
//! full lists on servers older than 1.15.
//!
//! Three facts of real API servers shape this module:
//!
//! - **A group's preferred version does not serve every kind.** The apiextensions discovery
//!   controller prefers the highest version *any* CRD of the group serves
//!   (k8s.io/apiextensions-apiserver@kubernetes-1.19.0
//!   pkg/apiserver/customresource_discovery_controller.go:176-183,198-200), so Istio 1.8–1.12's
//!   `networking.istio.io` prefers `v1beta1` while WorkloadGroup is served only at `v1alpha3`
//!   (istio/api@1.8.0 and @1.12.0 `customresourcedefinitions.gen.yaml`). [`served`] therefore asks
//!   discovery which versions hold the kind itself: `GET /apis/<group>` and, concurrently,
//!   `GET /apis/<group>/<version>` for each version meshvm speaks. Legacy discovery answers on
//!   every release of the matrix (aggregated discovery only from 1.26). What was learnt is kept
//!   for the connection, so a run asks once per group.
//! - **Continue tokens expire.** When etcd has compacted past a paged list's snapshot the server
//!   answers 410 `Expired` ("The provided continue parameter is too old to display a consistent
//!   list result…", k8s.io/apiserver@kubernetes-1.14.0 pkg/storage/etcd3/errors.go:36-38,61-68;
//!   the same text at kubernetes-1.33.0 pkg/storage/etcd3/errors.go:54-57). [`list_all`] restarts
//!   the list from scratch once, then gives up with [`crate::kube::Error::ListExpired`].
//! - **`meta.k8s.io/v1` metadata lists start in 1.15.** Before, only `meta.k8s.io/v1beta1` may be
//!   converted to (k8s.io/apiserver@kubernetes-1.14.0 pkg/endpoints/handlers/rest.go:82-96), so
//!   the `as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` that kube-rs asks for is refused with
//!   406 (pkg/endpoints/handlers/negotiation/negotiate.go:243-245,46-49). [`list_metadata`]
//!   therefore offers plain JSON as a second choice in the same `Accept` header, as client-go's
//!   metadata client does (client-go@v0.33.0 metadata/metadata.go:240-262): the server skips a
//!   clause whose conversion it cannot make and takes the next
//!   (apiserver@kubernetes-1.14.0 pkg/endpoints/handlers/negotiation/negotiate.go:260-287,
//!   `AllowsConversion` pkg/endpoints/handlers/rest.go:82-96), so 1.14 answers with the full list
//!   at once and no round trip is spent on a refusal. [`try_list_metadata`] (for callers that
//!   want the full objects when metadata is not served) still asks for metadata alone.
//! - **The server's version decides some requests in advance.** `/version` is read once per
//!   connection ([`server_version`], alongside a verb's first reads) so that what a release is
//!   known not to serve is not asked for (server-side apply before 1.16, in
//!   [`crate::plan::write`]) and what a release is known to answer uselessly is not sent.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

use ::kube::api::{Api, ListParams};
use ::kube::core::{ApiResource, GroupVersionKind, ObjectList};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIResourceList, ListMeta, ObjectMeta,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::kube::{Connection, Error, Request};

/// The page size of every list: few round trips, and small enough for any server.
pub const PAGE_SIZE: u32 = 500;

/// A kind meshvm reads or writes, as discovery names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KindRef {
    /// API group (never the core group: its one version `v1` needs no discovery).
    pub group: &'static str,
    /// `WorkloadGroup`.
    pub kind: &'static str,
    /// `workloadgroups`.
    pub plural: &'static str,
    /// The versions meshvm can read and write, newest first; only these are chosen.
    pub versions: &'static [&'static str],
}

impl KindRef {
    /// The kube-rs resource for this kind at `version`.
    pub fn resource(&self, version: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, version, self.kind),
            self.plural,
        )
    }

    /// `workloadgroups.networking.istio.io`, as RBAC and messages name it.
    pub fn resource_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

/// `networking.k8s.io` ServiceCIDR: `v1` from Kubernetes 1.33 (on by default), `v1beta1` from
/// 1.31 when enabled (k8s-versions.md §5: k8s.io/api@kubernetes-1.33.0 `networking/v1/types.go`,
/// @kubernetes-1.31.0 `networking/v1beta1/types.go`).
pub const SERVICE_CIDR: KindRef = KindRef {
    group: "networking.k8s.io",
    kind: "ServiceCIDR",
    plural: "servicecidrs",
    versions: &["v1", "v1beta1"],
};

/// Where a kind is served, or why it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Served at this version (the preferred version when it holds the kind, else the newest).
    At(String),
    /// Not served; the reason names what discovery found, for messages.
    Not(String),
}

impl Served {
    /// The version, when served.
    pub fn version(&self) -> Option<&str> {
        match self {
            Served::At(v) => Some(v),
            Served::Not(_) => None,
        }
    }
}

/// What discovery said about one API group (only the versions asked about are listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDiscovery {
    /// The group.
    pub group: String,
    /// Whether `GET /apis/<group>` found the group at all.
    pub served: bool,
    /// `preferredVersion.version`.
    pub preferred: Option<String>,
    /// The versions the group serves, in the server's order.
    pub versions: Vec<String>,
    /// For each version asked about: the plural resource names it serves (`None`: 404).
    pub resources: BTreeMap<String, Option<Vec<String>>>,
}

impl GroupDiscovery {
    /// Build from the discovery documents: `GET /apis/<group>` (`None`: 404) and
    /// `GET /apis/<group>/<version>` per version asked (`None`: 404).
    pub fn from_documents(
        group: &str,
        group_doc: Option<&APIGroup>,
        lists: impl IntoIterator<Item = (String, Option<APIResourceList>)>,
    ) -> Self {
        let mut d = GroupDiscovery {
            group: group.to_owned(),
            ..GroupDiscovery::default()
        };
        if let Some(doc) = group_doc {
            d.served = true;
            d.preferred = doc.preferred_version.as_ref().map(|v| v.version.clone());
            d.versions = doc.versions.iter().map(|v| v.version.clone()).collect();
        }
        for (version, list) in lists {
            d.resources.insert(
                version,
                list.map(|l| {
                    l.resources
                        .into_iter()
                        // Subresources (`workloadgroups/status`) are not kinds.
                        .filter(|r| !r.name.contains('/'))
                        .map(|r| r.name)
                        .collect()
                }),
            );
        }
        d
    }

    /// The versions asked about that hold `plural`, newest first.
    fn holding(&self, plural: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .resources
            .iter()
            .filter(|(version, list)| {
                self.versions.contains(version)
                    && list.as_ref().is_some_and(|l| l.iter().any(|r| r == plural))
            })
            .map(|(version, _)| version.as_str())
            .collect();
        v.sort_by(|a, b| compare_versions(b, a));
        v
    }

    /// Pick the version to use for `kind`. Pure.
    ///
    /// Among the versions meshvm speaks that the group serves *with this kind*: the group's
    /// preferred version when it is one of them, else the newest by Kubernetes' version order.
    pub fn pick(&self, kind: &KindRef) -> Served {
        if !self.served {
            return Served::Not(format!(
                "the cluster does not serve the API group {} (its CRDs are not installed)",
                self.group
            ));
        }
        let holding = self.holding(kind.plural);
        let usable: Vec<&str> = holding
            .iter()
            .copied()
            .filter(|v| kind.versions.contains(v))
            .collect();
        if let Some(preferred) = self.preferred.as_deref().filter(|p| usable.contains(p)) {
            return Served::At(preferred.to_owned());
        }
        if let Some(newest) = usable.first() {
            return Served::At((*newest).to_owned());
        }
        let served = self.versions.join(", ");
        if holding.is_empty() {
            Served::Not(format!(
                "{} serves {served}, but none of those versions has {}",
                self.group, kind.plural
            ))
        } else {
            Served::Not(format!(
                "{} is served only at {}.{}, which meshvm does not speak (it knows {})",
                kind.plural,
                self.group,
                holding.join(", "),
                kind.versions.join(", ")
            ))
        }
    }

    /// Versions in `wanted` the group serves whose resource list was not fetched yet.
    fn missing<'a>(&self, wanted: &[&'a str]) -> Vec<&'a str> {
        wanted
            .iter()
            .copied()
            .filter(|v| !self.resources.contains_key(*v))
            .filter(|v| !self.served || self.versions.iter().any(|s| s == v))
            .collect()
    }
}

/// Kubernetes' version order: GA before beta before alpha, then higher major, then higher minor;
/// versions that do not look like Kubernetes versions sort last
/// (k8s.io/apimachinery@kubernetes-1.14.0 pkg/version/helpers.go:36-90,
/// `CompareKubeAwareVersionStrings`). `Greater` means `a` has the higher priority.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((2, major, 0));
        }
        let (stage, n) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else {
            (0, tail.strip_prefix("alpha")?)
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((stage, major, n.parse().ok()?))
    }
    if a == b {
        return Ordering::Equal;
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        // Go's strings.Compare(v2, v1): non-Kubernetes versions in reverse alphabetical order.
        (None, None) => b.cmp(a),
    }
}

/// What a connection learnt about its server; shared by clones of the connection.
#[derive(Default)]
pub struct Cache {
    groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<GroupDiscovery>>>>>,
    metadata_lists: AtomicU8,
    version: tokio::sync::OnceCell<ServerVersion>,
}

// `metadata_lists`: 0 while not known yet, then one of these.
const METADATA_SERVED: u8 = 1;
const METADATA_REFUSED: u8 = 2;

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

impl Cache {
    fn group_slot(&self, group: &str) -> Arc<tokio::sync::Mutex<Option<GroupDiscovery>>> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(group.to_owned())
            .or_default()
            .clone()
    }

    /// Whether the server refused a `meta.k8s.io/v1` metadata list (406) on this connection.
    pub fn metadata_lists_refused(&self) -> bool {
        self.metadata_lists.load(AtomicOrdering::Relaxed) == METADATA_REFUSED
    }
}

/// The API server's Kubernetes version, from `/version` (`major`, `minor`: `"1"`, `"14"`, or
/// `"14+"` on some providers; apimachinery@kubernetes-1.14.0 pkg/version/types.go:24-34).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// `major`.
    pub major: u32,
    /// `minor`, without a provider's suffix.
    pub minor: u32,
}

impl ServerVersion {
    /// From `/version`'s `major` and `minor` strings (their leading digits); `None` when either
    /// has none.
    pub fn parse(major: &str, minor: &str) -> Option<Self> {
        let number = |s: &str| -> Option<u32> {
            let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some(Self {
            major: number(major)?,
            minor: number(minor)?,
        })
    }

    /// Whether this is Kubernetes 1.`minor` or later.
    pub fn at_least(self, minor: u32) -> bool {
        self.major > 1 || (self.major == 1 && self.minor >= minor)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The server's version, from `GET /version` the first time and from memory afterwards (for the
/// connection and its clones). A verb sends it together with its first reads, so later requests
/// can be chosen for the release without a round trip of their own. Every authenticated user
/// may read it (the `system:discovery` ClusterRole), as [`crate::rbac`] notes.
pub async fn server_version(conn: &Connection) -> Result<ServerVersion, Error> {
    let cache = conn.memo::<Cache>();
    cache
        .version
        .get_or_try_init(|| async {
            let info = conn
                .call(Request::new("get", "version"), || {
                    conn.client.apiserver_version()
                })
                .await?;
            Ok(ServerVersion::parse(&info.major, &info.minor)
                .unwrap_or(ServerVersion { major: 0, minor: 0 }))
        })
        .await
        .copied()
}

/// [`server_version`] for callers that can do without it: `None` when it cannot be read (the
/// requests it would decide are then sent the way that works on every release).
pub async fn server_version_if_readable(conn: &Connection) -> Option<ServerVersion> {
    match server_version(conn).await {
        Ok(v) if v.major > 0 => Some(v),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the server version");
            None
        }
    }
}

/// The server's version when this connection has read it already ([`server_version`]).
pub fn known_server_version(conn: &Connection) -> Option<ServerVersion> {
    conn.memo::<Cache>()
        .version
        .get()
        .copied()
        .filter(|v| v.major > 0)
}

/// Discover `group` as far as the versions in `wanted` go: the group document and the resource
/// list of each wanted version, fetched concurrently (one round trip), remembered for the
/// connection. Later calls fetch only what is still missing.
pub async fn discover(
    conn: &Connection,
    group: &str,
    wanted: &[&str],
) -> Result<GroupDiscovery, Error> {
    let slot = conn.memo::<Cache>().group_slot(group);
    let mut entry = slot.lock().await;
    let need_group = entry.is_none();
    let missing: Vec<&str> = match entry.as_ref() {
        Some(d) => d.missing(wanted),
        None => wanted.to_vec(),
    };
    if !need_group && missing.is_empty() {
        return Ok(entry.clone().unwrap_or_default());
    }
    let group_doc = async {
        if need_group {
            get_group(conn, group).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let lists = futures::future::try_join_all(missing.iter().map(|v| async move {
        get_resources(conn, group, v)
            .await
            .map(|l| ((*v).to_owned(), l))
    }));
    let (group_doc, lists) = futures::future::try_join(group_doc, lists).await?;
    let fetched = if let Some(doc) = group_doc {
        GroupDiscovery::from_documents(group, doc.as_ref(), lists)
    } else {
        let mut d = entry.clone().unwrap_or_default();
        d.resources
            .extend(GroupDiscovery::from_documents(group, None, lists).resources);
        d
    };
    *entry = Some(fetched.clone());
    Ok(fetched)
}

/// `GET /apis/<group>`; `None` when the group is not served (404).
async fn get_group(conn: &Connection, group: &str) -> Result<Option<APIGroup>, Error> {
    let path = format!("/apis/{group}");
    let result = conn
        .call(Request::new("get", format!("apigroups {group}")), || {
            let request = http::Request::get(path.as_str())
                .body(Vec::new())
                .map_err(::kube::Error::HttpError);
            async move { conn.client.request::<APIGroup>(request?).await }
        })
        .await;
    match result {
        Ok(doc) => Ok(Some(doc)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `GET /apis/<group>/<version>`; `None` when that version is not served (404).
async fn get_resources(
    conn: &Connection,
    group: &str,
    version: &str,
) -> Result<Option<APIResourceList>, Error> {
    let gv = format!("{group}/{version}");
    let result = conn
        .call(Request::new("get", format!("apiresources {gv}")), || {
            conn.client.list_api_group_resources(&gv)
        })
        .await;
    match result {
        Ok(list) => Ok(Some(list)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The version `kind` is served at on this cluster (see [`GroupDiscovery::pick`]).
pub async fn served(conn: &Connection, kind: &KindRef) -> Result<Served, Error> {
    // Boxed: discovery's concurrent requests make a large future, awaited inside other ones.
    Ok(Box::pin(discover(conn, kind.group, kind.versions))
        .await?
        .pick(kind))
}

/// Where a paged list stands: the next continue token, and whether it restarted already.
#[derive(Debug, Default)]
struct Pager {
    token: Option<String>,
    restarted: bool,
}

impl Pager {
    fn params(&self, base: &ListParams) -> ListParams {
        let mut lp = base.clone().limit(PAGE_SIZE);
        lp.continue_token.clone_from(&self.token);
        lp
    }

    /// Take the page's continue token; `false` when the list is complete.
    fn advance(&mut self, next: Option<String>) -> bool {
        self.token = next.filter(|t| !t.is_empty());
        self.token.is_some()
    }

    /// A failed page: `Ok` when the list should start over (a continue token expired for the
    /// first time), else the error to report.
    fn restart_or(&mut self, err: Error, action: &Request) -> Result<(), Error> {
        if !err.is_gone() || self.token.is_none() {
            return Err(err);
        }
        if self.restarted {
            return Err(Error::ListExpired {
                action: action.clone(),
            });
        }
        tracing::debug!(%action, "continue token expired: listing again from the start");
        self.restarted = true;
        self.token = None;
        Ok(())
    }
}

/// Every object of a list, page by page (`limit` 500 + `continue`), each passed through `keep`
/// as its page arrives (so only what is kept is held). On 410 Expired the list starts over once.
pub async fn list_all<K, T>(
    conn: &Connection,
    api: &Api<K>,
    action: Request,
    params: &ListParams,
    keep: impl FnMut(K) -> Option<T>,
) -> Result<Vec<T>, Error>
where
    K: Clone + DeserializeOwned + fmt::Debug,
{
    paged(
        conn,
        action,
        params,
        |lp| async move { api.list(&lp).await },
        keep,
    )
    .await
}

/// One listed object as the JSON text of each of its top-level fields (`metadata`, `spec`, …):
/// read without building a tree of it, for callers that keep it compact.
pub type RawItem = BTreeMap<String, Box<serde_json::value::RawValue>>;

/// Every object of the list at `url` (a collection path, `/apis/<group>/<version>/<plural>`),
/// paged as [`list_all`] pages, each page's items passed through `keep` as [`RawItem`]s.
pub async fn list_all_raw<T>(
    conn: &Connection,
    url: &str,
    action: Request,
    params: &ListParams,
    keep: impl FnMut(RawItem) -> Option<T>,
) -> Result<Vec<T>, Error> {
    paged(
        conn,
        action,
        params,
        |lp| async move {
            let request = ::kube::core::Request::new(url)
                .list(&lp)
                .map_err(::kube::Error::BuildRequest)?;
            conn.client.request::<ObjectList<RawItem>>(request).await
        },
        keep,
    )
    .await
}

/// The paging of [`list_all`] and [`list_all_raw`]: `fetch` reads one page (`limit` 500 and
/// the `continue` so far), each page's items go through `keep`; on 410 Expired the list starts
/// over once.
async fn paged<I, T, Fut>(
    conn: &Connection,
    action: Request,
    params: &ListParams,
    fetch: impl Fn(ListParams) -> Fut,
    mut keep: impl FnMut(I) -> Option<T>,
) -> Result<Vec<T>, Error>
where
    I: Clone,
    Fut: Future<Output = Result<ObjectList<I>, ::kube::Error>>,
{
    let mut pager = Pager::default();
    let mut out = Vec::new();
    loop {
        let lp = pager.params(params);
        match conn.call(action.clone(), || fetch(lp.clone())).await {
            Ok(page) => {
                out.extend(page.items.into_iter().filter_map(&mut keep));
                if !pager.advance(page.metadata.continue_) {
                    return Ok(out);
                }
            }
            Err(e) => {
                pager.restart_or(e, &action)?;
                out.clear();
            }
        }
    }
}

/// `Accept` for a metadata list that any release answers in one request: `meta.k8s.io/v1`
/// `PartialObjectMetadataList` where served (1.15+), else the full list as plain JSON (see the
/// module docs).
pub const METADATA_OR_FULL_LIST: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";

/// One page of a list asked for as [`METADATA_OR_FULL_LIST`]: a `PartialObjectMetadataList`
/// or a full `<Kind>List`, its items read as `I` ([`MetadataItem`]: other fields are skipped
/// while parsing; [`RawItem`]: kept as text).
#[derive(Deserialize)]
#[serde(bound = "I: serde::de::DeserializeOwned")]
struct MetadataOrFullPage<I> {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default = "Vec::new")]
    items: Vec<I>,
}

/// What [`metadata_or_full_pages`] hands its caller.
enum PageEvent<I> {
    /// A page's items, and whether they are metadata (else full objects).
    Items(bool, Vec<I>),
    /// A continue token expired: the list starts over, forget what was taken.
    Restart,
}

/// The list at `url`, one request per page on every release ([`METADATA_OR_FULL_LIST`]), each
/// page passed to `take`; remembers on the connection which the server answered.
/// `Ok(false)`: refused with 406 on the first page (not expected with plain JSON offered).
async fn metadata_or_full_pages<I: serde::de::DeserializeOwned>(
    conn: &Connection,
    url: &str,
    action: &Request,
    params: &ListParams,
    mut take: impl FnMut(PageEvent<I>),
) -> Result<bool, Error> {
    let cache = conn.memo::<Cache>();
    let mut pager = Pager::default();
    loop {
        let lp = pager.params(params);
        let page = conn
            .call(action.clone(), || {
                let request = ::kube::core::Request::new(url).list(&lp).map(|mut r| {
                    r.headers_mut().insert(
                        http::header::ACCEPT,
                        http::HeaderValue::from_static(METADATA_OR_FULL_LIST),
                    );
                    r
                });
                async move {
                    conn.client
                        .request::<MetadataOrFullPage<I>>(
                            request.map_err(::kube::Error::BuildRequest)?,
                        )
                        .await
                }
            })
            .await;
        match page {
            Ok(page) => {
                let served = page.kind == "PartialObjectMetadataList";
                cache.metadata_lists.store(
                    if served {
                        METADATA_SERVED
                    } else {
                        METADATA_REFUSED
                    },
                    AtomicOrdering::Relaxed,
                );
                take(PageEvent::Items(served, page.items));
                if !pager.advance(page.metadata.continue_) {
                    return Ok(true);
                }
            }
            Err(e) if e.is_not_acceptable() && pager.token.is_none() => {
                tracing::debug!(%action, error = %e, "metadata lists refused: listing in full from now on");
                cache
                    .metadata_lists
                    .store(METADATA_REFUSED, AtomicOrdering::Relaxed);
                return Ok(false);
            }
            Err(e) => {
                pager.restart_or(e, action)?;
                take(PageEvent::Restart);
            }
        }
    }
}

#[derive(Deserialize)]
struct MetadataItem {
    #[serde(default)]
    metadata: ObjectMeta,
}

/// What [`list_metadata_or_full`] read: metadata where the server serves metadata lists, else
/// the full objects (the server sent them anyway; the caller keeps what it needs of them).
pub enum MetaOrFull<M = Vec<ObjectMeta>> {
    /// `meta.k8s.io/v1` `PartialObjectMetadataList` items' metadata, as collected.
    Metadata(M),
    /// The full list's items, as read.
    Full(Vec<RawItem>),
}

/// The list at `url` in one request per page on every release, as [`list_metadata`] asks
/// ([`METADATA_OR_FULL_LIST`]), but a full list as the answer (Kubernetes before 1.15) is kept
/// whole rather than cut to metadata: a caller that reads some objects in full after a metadata
/// list has them already, without another round trip.
pub async fn list_metadata_or_full(
    conn: &Connection,
    url: &str,
    action: Request,
    params: &ListParams,
) -> Result<MetaOrFull, Error> {
    list_metadata_or_full_into(conn, url, action, params, Vec::new, Vec::push).await
}

/// [`list_metadata_or_full`], each item's metadata handed to `add` as its page arrives (a list
/// that restarts starts again from `start()`): a caller that keeps only part of it never holds
/// the whole metadata of every object at once.
pub async fn list_metadata_or_full_into<M>(
    conn: &Connection,
    url: &str,
    action: Request,
    params: &ListParams,
    start: impl Fn() -> M,
    mut add: impl FnMut(&mut M, ObjectMeta),
) -> Result<MetaOrFull<M>, Error> {
    let (mut metas, mut full) = (start(), Vec::new());
    let served = metadata_or_full_pages(conn, url, &action, params, |event| match event {
        PageEvent::Items(true, items) => {
            for item in items {
                let mut item: RawItem = item;
                let meta = item
                    .remove("metadata")
                    .and_then(|raw| serde_json::from_str(raw.get()).ok())
                    .unwrap_or_default();
                add(&mut metas, meta);
            }
        }
        PageEvent::Items(false, items) => full.extend(items),
        PageEvent::Restart => {
            metas = start();
            full.clear();
        }
    })
    .await?;
    if !served {
        return list_all_raw(conn, url, action, params, Some)
            .await
            .map(MetaOrFull::Full);
    }
    Ok(if full.is_empty() {
        MetaOrFull::Metadata(metas)
    } else {
        MetaOrFull::Full(full)
    })
}

/// The metadata of every object of a list, as [`list_all`] pages it, one request per page on
/// every release: it asks for `meta.k8s.io/v1` `PartialObjectMetadataList` or else plain JSON
/// ([`METADATA_OR_FULL_LIST`]). A full list as the answer (Kubernetes before 1.15) is remembered
/// for the connection ([`Cache::metadata_lists_refused`]); its metadata is kept.
pub async fn list_metadata<K>(
    conn: &Connection,
    api: &Api<K>,
    action: Request,
    params: &ListParams,
) -> Result<Vec<ObjectMeta>, Error>
where
    K: ::kube::Resource + Clone + DeserializeOwned + fmt::Debug,
{
    if conn.memo::<Cache>().metadata_lists_refused() {
        return list_all(conn, api, action, params, |o: K| Some(o.meta().clone())).await;
    }
    let mut out = Vec::new();
    let served =
        metadata_or_full_pages(
            conn,
            api.resource_url(),
            &action,
            params,
            |event| match event {
                PageEvent::Items(_, items) => {
                    out.extend(items.into_iter().map(|i: MetadataItem| i.metadata));
                }
                PageEvent::Restart => out.clear(),
            },
        )
        .await?;
    if !served {
        return list_all(conn, api, action, params, |o: K| Some(o.meta().clone())).await;
    }
    Ok(out)
}

/// The metadata of every object of a list as a `meta.k8s.io/v1` `PartialObjectMetadataList`,
/// paged as [`list_all`] pages; `None` when the server does not serve such lists (406 on the
/// first page: Kubernetes before 1.15), remembered for the connection so later calls do not
/// ask again. Callers then list in full, each choosing what to keep.
///
/// 1.14 does answer `v=v1beta1`, but its `PartialObjectMetadataList` carries no list metadata:
/// apiserver@kubernetes-1.14.0 pkg/endpoints/handlers/response.go:188-207
/// (`asV1Beta1PartialObjectMetadataList` builds the list from the items alone), so a paged
/// metadata list would end silently after its first page without a `continue` token. 1.15
/// copies `continue` and `resourceVersion` for both versions (apiserver@kubernetes-1.15.0
/// pkg/endpoints/handlers/response.go:206-251). Hence v1 only, and full lists before 1.15.
pub async fn try_list_metadata<K>(
    conn: &Connection,
    api: &Api<K>,
    action: Request,
    params: &ListParams,
) -> Result<Option<Vec<ObjectMeta>>, Error>
where
    K: ::kube::Resource + Clone + DeserializeOwned + fmt::Debug,
{
    let cache = conn.memo::<Cache>();
    if cache.metadata_lists_refused() {
        return Ok(None);
    }
    let mut pager = Pager::default();
    let mut out = Vec::new();
    let refused = loop {
        let lp = pager.params(params);
        let page: Result<ObjectList<_>, Error> =
            conn.call(action.clone(), || api.list_metadata(&lp)).await;
        match page {
            Ok(page) => {
                cache
                    .metadata_lists
                    .store(METADATA_SERVED, AtomicOrdering::Relaxed);
                out.extend(page.items.into_iter().map(|o| o.metadata));
                if !pager.advance(page.metadata.continue_) {
                    return Ok(Some(out));
                }
            }
            Err(e) if e.is_not_acceptable() && pager.token.is_none() => break e,
            Err(e) => {
                pager.restart_or(e, &action)?;
                out.clear();
            }
        }
    };
    tracing::debug!(%action, error = %refused, "metadata lists refused: listing in full from now on");
    cache
        .metadata_lists
        .store(METADATA_REFUSED, AtomicOrdering::Relaxed);
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests;
