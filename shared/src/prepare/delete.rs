//! `prepare --delete`: the runbook's cleanup for one VM — its namespace and everything prepare and
//! register made in it — listed first, confirmed, then deleted; `cacerts` only with `--include-ca`.
//! `prepare --delete --expose SVC.NS[,…]` removes only the `.global` ServiceEntries `--expose`
//! made for those Services, each guarded by the resourceVersion it was read at; the namespace
//! and everything else stay.

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Secret, Service, ServiceAccount};
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use serde_json::{Value, json};

use super::expose::{Exposed, is_ours};
use super::observe::{get_opt, networking_version};
use super::options::Options;
use super::{Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::istio::{CACERTS_SECRET, IstioKind};
use crate::kube::{Connection, Request};
use crate::plan::write::{self, Kind, Precondition, Resource, Write};
use crate::plan::{Action, Change, Plan};

/// What `--delete` found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The VM namespace, when it exists.
    pub namespace: Option<Namespace>,
    /// `(kind, name)` of what prepare and register make, inside the namespace.
    pub contents: Vec<(Kind, String)>,
    /// `cacerts`, when `--include-ca` and it exists.
    pub cacerts: Option<Secret>,
    /// The version the cluster serves networking.istio.io at, when it does.
    pub networking_version: Option<String>,
    /// The version the cluster serves ServiceEntry at (Istio 1.4 too), when it does.
    pub service_entry_version: Option<String>,
    /// `--delete --expose`: each named Service's `.global` ServiceEntry, when it exists.
    pub exposed: Vec<(Exposed, Option<DynamicObject>)>,
}

/// Names of a list; a 404 (an Istio kind this cluster does not serve) is an empty list.
async fn names<K>(
    conn: &Connection,
    api: Api<K>,
    request: Request,
) -> Result<Vec<String>, crate::kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    // Paged, and in full before Kubernetes 1.15 (no meta.k8s.io/v1 metadata lists there).
    match crate::read::list_metadata(conn, &api, request, &ListParams::default()).await {
        Ok(list) => Ok(list.into_iter().filter_map(|m| m.name).collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// `--delete --expose`: the ServiceEntry of each named Service (GET by name, concurrently).
async fn observe_exposed(conn: &Connection, opts: &Options) -> Result<Found, Error> {
    let ns = opts.vm_namespace.as_str();
    let kind = IstioKind::ServiceEntry;
    let Some(version) = kind.served_version(conn).await? else {
        return Ok(Found {
            exposed: opts.expose.iter().map(|e| (e.clone(), None)).collect(),
            ..Found::default()
        });
    };
    let api =
        Api::<DynamicObject>::namespaced_with(conn.client.clone(), ns, &kind.resource(&version));
    let found = futures::future::try_join_all(opts.expose.iter().map(|e| {
        let api = api.clone();
        async move {
            let name = e.entry_name();
            let request = Request::new("get", kind.resource_name()).ns(ns).name(&name);
            get_opt(conn, &api, request, &name)
                .await
                .map(|obj| (e.clone(), obj))
        }
    }))
    .await?;
    Ok(Found {
        service_entry_version: Some(version),
        exposed: found,
        ..Found::default()
    })
}

/// Read the namespace, what is in it, and (with `--include-ca`) `cacerts`, concurrently; with
/// `--expose`, only the named Services' ServiceEntries.
pub async fn observe(conn: &Connection, opts: &Options) -> Result<Found, Error> {
    if !opts.expose.is_empty() {
        return observe_exposed(conn, opts).await;
    }
    let client = conn.client.clone();
    let ns = opts.vm_namespace.as_str();
    let istio_ns = opts.istio_namespace.as_str();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), istio_ns);
    let get_ns = get_opt(
        conn,
        &namespaces,
        Request::new("get", "namespaces").name(ns),
        ns,
    );
    let get_ca = async {
        if opts.include_ca {
            get_opt(
                conn,
                &secrets,
                Request::new("get", "secrets")
                    .ns(istio_ns)
                    .name(CACERTS_SECRET),
                CACERTS_SECRET,
            )
            .await
        } else {
            Ok(None)
        }
    };
    let accounts = names(
        conn,
        Api::<ServiceAccount>::namespaced(client.clone(), ns),
        Request::new("list", "serviceaccounts").ns(ns),
    );
    let services = names(
        conn,
        Api::<Service>::namespaced(client.clone(), ns),
        Request::new("list", "services").ns(ns),
    );
    let endpoints = names(
        conn,
        Api::<Endpoints>::namespaced(client.clone(), ns),
        Request::new("list", "endpoints").ns(ns),
    );
    let istio = async {
        let Some(version) = networking_version(conn).await? else {
            return Ok((None, Vec::new(), Vec::new()));
        };
        let list = |kind: IstioKind| {
            let ar = kind.resource(&version);
            names(
                conn,
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
                Request::new("list", kind.resource_name()).ns(ns),
            )
        };
        let (groups, entries) = tokio::try_join!(
            list(IstioKind::WorkloadGroup),
            list(IstioKind::WorkloadEntry)
        )?;
        Ok((Some(version), groups, entries))
    };
    // The `.global` ServiceEntries `--expose` made (legacy, where no WorkloadGroup is served).
    let service_entries = async {
        let kind = IstioKind::ServiceEntry;
        let Some(version) = kind.served_version(conn).await? else {
            return Ok((None, Vec::new()));
        };
        let ar = kind.resource(&version);
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
        let params =
            ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let list = match crate::read::list_metadata(
            conn,
            &api,
            Request::new("list", kind.resource_name()).ns(ns),
            &params,
        )
        .await
        {
            Ok(list) => list.into_iter().filter_map(|m| m.name).collect(),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok((Some(version), list))
    };
    let (
        namespace,
        cacerts,
        accounts,
        services,
        endpoints,
        (networking_version, groups, entries),
        (service_entry_version, service_entries),
    ) = tokio::try_join!(
        get_ns,
        get_ca,
        accounts,
        services,
        endpoints,
        istio,
        service_entries
    )?;
    let mut contents = Vec::new();
    for (kind, items) in [
        (Kind::ServiceAccount, accounts),
        (Kind::WorkloadGroup, groups),
        (Kind::WorkloadEntry, entries),
        (Kind::Service, services),
        (Kind::Endpoints, endpoints),
        (Kind::ServiceEntry, service_entries),
    ] {
        contents.extend(items.into_iter().map(|n| (kind, n)));
    }
    Ok(Found {
        namespace,
        contents,
        cacerts,
        networking_version,
        service_entry_version,
        exposed: Vec::new(),
    })
}

/// The rows of a deletion. Pure. Refuses a namespace meshvm did not make unless `--force`.
/// One write deletes the namespace (what is in it goes with it: those rows carry no write of
/// their own); `cacerts` is deleted after it.
pub fn plan(found: &Found, opts: &Options) -> Result<Plan, Error> {
    let ns = opts.vm_namespace.as_str();
    let mut plan = Plan::default();
    if !opts.expose.is_empty() {
        return plan_exposed(found, ns);
    }
    if let Some(namespace) = &found.namespace {
        let ours = namespace
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == MANAGED_BY_VALUE);
        if !ours && !opts.force {
            return Err(Error::NotMadeByPrepare {
                namespace: ns.to_owned(),
            });
        }
        for (kind, name) in &found.contents {
            plan.push(
                Change::new(Action::Delete, *kind, Some(ns), name)
                    .detail(format!("with namespace {ns}"))
                    .object(reference(found, *kind, Some(ns), name)),
            );
        }
        plan.push(
            Change::new(Action::Delete, Kind::Namespace, None, ns)
                .object(reference(found, Kind::Namespace, None, ns))
                .write(Write::delete(Resource::new(Kind::Namespace, "v1"))),
        );
    }
    if found.cacerts.is_some() {
        let mut delete = Write::delete(Resource::new(Kind::Secret, "v1"));
        if let Some(ns_row) = plan.changes.iter().position(|c| c.write.is_some()) {
            // As before: cacerts only once the namespace is on its way.
            delete = delete.after(ns_row);
        }
        plan.push(
            Change::new(
                Action::Delete,
                Kind::Secret,
                Some(&opts.istio_namespace),
                CACERTS_SECRET,
            )
            .detail("--include-ca: the mesh-wide CA; the control plane keeps the key it loaded")
            .object(reference(
                found,
                Kind::Secret,
                Some(&opts.istio_namespace),
                CACERTS_SECRET,
            ))
            .write(delete),
        );
    }
    Ok(plan)
}

/// `--delete --expose`: one guarded delete per ServiceEntry that exists; one meshvm did not make
/// (no managed-by label) is refused before anything is deleted.
fn plan_exposed(found: &Found, ns: &str) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    for (exposed, entry) in &found.exposed {
        let Some(entry) = entry else { continue };
        let name = exposed.entry_name();
        if !is_ours(entry) {
            return Err(Error::NotOurServiceEntry {
                namespace: ns.to_owned(),
                name,
            });
        }
        let version = found.service_entry_version.as_deref().unwrap_or("v1alpha3");
        let mut write = Write::delete(Resource::new(Kind::ServiceEntry, version));
        if let Some(rv) = entry.metadata.resource_version.as_deref() {
            // Deleted only as read: a ServiceEntry changed meanwhile is reported, not deleted.
            write = write.precondition(Precondition::ResourceVersion(rv.to_owned()));
        }
        plan.push(
            Change::new(Action::Delete, Kind::ServiceEntry, Some(ns), &name)
                .detail(format!("{} ({})", exposed.host(), exposed))
                .object(reference(found, Kind::ServiceEntry, Some(ns), &name))
                .write(write),
        );
    }
    Ok(plan)
}

fn reference(found: &Found, kind: Kind, namespace: Option<&str>, name: &str) -> Value {
    let api_version = match kind.fixed_version() {
        Some(version) => Resource::new(kind, version).api_version(),
        None if kind == Kind::ServiceEntry => Resource::new(
            kind,
            found.service_entry_version.as_deref().unwrap_or("v1alpha3"),
        )
        .api_version(),
        None => {
            Resource::new(kind, found.networking_version.as_deref().unwrap_or("v1")).api_version()
        }
    };
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": metadata})
}

/// Delete the namespace (its contents go with it) and, when planned, `cacerts`, through the
/// executor; the rows of what is in the namespace end as the namespace's row does.
pub async fn apply(conn: &Connection, plan: &mut Plan, opts: &Options) -> Result<(), Error> {
    let result = write::execute(conn, plan, opts.dry_run).await;
    if let Some(ns_row) = plan
        .changes
        .iter()
        .find(|c| c.kind == Kind::Namespace && c.write.is_some())
        .cloned()
    {
        for c in plan.changes.iter_mut().filter(|c| c.write.is_none()) {
            c.state = ns_row.state;
        }
    }
    result.map_err(|failure| match failure.error {
        write::Error::Kube(e) => Error::Kube(e),
        other @ (write::Error::Raced { .. } | write::Error::Invalid { .. }) => Error::Write(other),
    })
}
