//! What `prepare` reads from the cluster: every object once, concurrently.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::Api;
use kube::api::{DynamicObject, ListParams};

use super::Error;
use super::expose;
use super::options::Options;
use super::plan::{EraSource, ExposeObserved, Observed};
use crate::istio::{CACERTS_SECRET, Era, IstioKind, era_from_deployments};
use crate::kube::{Connection, Request};

/// GET one object; `None` when it does not exist.
pub(crate) async fn get_opt<K>(
    conn: &Connection,
    api: &Api<K>,
    action: Request,
    name: &str,
) -> Result<Option<K>, crate::kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    conn.call(action, || api.get_opt(name)).await
}

/// The networking.istio.io version meshvm reads and writes VM objects at: the one serving
/// WorkloadGroup, found per kind by discovery ([`crate::read::served`]), since the group's
/// preferred version may lack it (Istio 1.8–1.12 serve WorkloadGroup only at v1alpha3 while the
/// group prefers v1beta1: istio/api@1.8.0 `customresourcedefinitions.gen.yaml`). Every release
/// serves WorkloadEntry there too; before WorkloadGroup existed (Istio 1.6–1.7), WorkloadEntry's
/// version. `None` when neither kind is served.
pub(crate) async fn networking_version(
    conn: &Connection,
) -> Result<Option<String>, crate::kube::Error> {
    if let Some(v) = IstioKind::WorkloadGroup.served_version(conn).await? {
        return Ok(Some(v));
    }
    IstioKind::WorkloadEntry.served_version(conn).await
}

/// Read everything the plan needs. The era comes from the Istio namespace's Deployments (the
/// same rule as [`crate::istio::detect_era`]), listed in full once because the CA Deployment's
/// pod template is needed too.
pub async fn observe(conn: &Connection, opts: &Options) -> Result<Observed, Error> {
    let client = conn.client.clone();
    let istio_ns = opts.istio_namespace.as_str();
    let vm_ns = opts.vm_namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), istio_ns);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), istio_ns);
    let list_params = ListParams::default();

    let list_deployments = crate::read::list_all(
        conn,
        &deployments,
        Request::new("list", "deployments.apps").ns(istio_ns),
        &list_params,
        Some,
    );
    let get_istio_ns = async {
        if opts.ca.is_some() {
            get_opt(
                conn,
                &namespaces,
                Request::new("get", "namespaces").name(istio_ns),
                istio_ns,
            )
            .await
        } else {
            Ok(None)
        }
    };
    let get_cacerts = async {
        // Also for --restart-control-plane alone: a restart is due when cacerts is newer than
        // the CA's start.
        if opts.ca.is_some() || opts.restart_control_plane {
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
    let get_vm_ns = get_opt(
        conn,
        &namespaces,
        Request::new("get", "namespaces").name(vm_ns),
        vm_ns,
    );
    // The one rule every verb uses: -s, else the account an earlier prepare made here, else
    // the namespace's name. The list of those prepare made and the GET of the likeliest go out
    // with the other reads ([`crate::scope::read_candidates`]).
    let candidates = crate::scope::read_candidates(conn, vm_ns, opts.service_account.as_deref());
    let discover = async {
        if opts.workload_group.is_some() {
            networking_version(conn).await
        } else {
            Ok(None)
        }
    };
    // Read now so the writes know the release: server-side apply before 1.16 is not asked for
    // ([`crate::plan::write`]).
    let version = crate::read::server_version_if_readable(conn);
    // All sent together; errors are reported in this order whatever answers first.
    let (candidates, deployments, istio_namespace, cacerts, vm_namespace, networking_version, _) = tokio::join!(
        candidates,
        list_deployments,
        get_istio_ns,
        get_cacerts,
        get_vm_ns,
        discover,
        version
    );
    let (account, service_account) = crate::scope::settle_account(conn, candidates?, None)
        .await
        .map_err(|e| match e {
            crate::scope::Error::Kube(k) => Error::Kube(k),
            ambiguous @ crate::scope::Error::Ambiguous { .. } => Error::Scope(ambiguous),
        })?;
    let (deployments, istio_namespace, cacerts, vm_namespace, networking_version) = (
        deployments?,
        istio_namespace?,
        cacerts?,
        vm_namespace?,
        networking_version?,
    );

    let (era, era_source) = if let Some(era) = opts.era {
        (Some(era), EraSource::Forced)
    } else {
        let names = deployments
            .iter()
            .filter_map(|d| d.metadata.name.as_deref());
        match era_from_deployments(names) {
            Some(era) => {
                let control_plane = deployments
                    .iter()
                    .filter_map(|d| d.metadata.name.clone())
                    .filter(|n| {
                        matches!(n.as_str(), "istio-citadel" | "istio-pilot" | "istiod")
                            || n.starts_with("istiod-")
                    })
                    .collect();
                (Some(era), EraSource::Detected(control_plane))
            }
            None => (None, EraSource::Unknown),
        }
    };

    // The WorkloadGroup and the entries made from it (by Istio's auto-registration or by
    // register, so a change of its ports or labels can name those now stale), read together; in a
    // namespace that does not exist yet neither can be there.
    let workload_group_and_entries = match (&opts.workload_group, &networking_version, era) {
        (Some(wg), Some(version), Some(Era::Modern)) if vm_namespace.is_some() => {
            let ar = IstioKind::WorkloadGroup.resource(version);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), vm_ns, &ar);
            let group = get_opt(
                conn,
                &api,
                Request::new("get", IstioKind::WorkloadGroup.resource_name())
                    .ns(vm_ns)
                    .name(&wg.name),
                &wg.name,
            );
            let ar = IstioKind::WorkloadEntry.resource(version);
            let api: Api<DynamicObject> = Api::namespaced_with(conn.client.clone(), vm_ns, &ar);
            let entries = crate::read::list_all(
                conn,
                &api,
                Request::new("list", IstioKind::WorkloadEntry.resource_name()).ns(vm_ns),
                &list_params,
                Some,
            );
            let (group, entries) = tokio::join!(group, entries);
            match group? {
                Some(group) => Some((group, entries?)),
                None => None,
            }
        }
        _ => None,
    };
    let (workload_group, workload_entries) = match workload_group_and_entries {
        Some((group, entries)) => (Some(group), entries),
        None => (None, Vec::new()),
    };

    let expose = if opts.expose.is_empty() {
        ExposeObserved::default()
    } else {
        Box::pin(observe_expose(conn, opts, era)).await?
    };

    Ok(Observed {
        expose,
        era,
        era_source: Some(era_source),
        deployments,
        istio_namespace,
        cacerts,
        vm_namespace,
        service_account,
        account: Some(account),
        networking_version,
        workload_group,
        workload_entries,
    })
}

/// What `--expose` needs, read concurrently: every named Service; legacy, the ServiceEntries
/// (cluster-wide, for the addresses others hold; the VM namespace's alone when RBAC refuses the
/// rest) and the ingress gateway Service; modern, the east-west gateway Services and
/// `cross-network-gateway`.
pub(crate) async fn observe_expose(
    conn: &Connection,
    opts: &Options,
    era: Option<Era>,
) -> Result<ExposeObserved, Error> {
    let client = conn.client.clone();
    let istio_ns = opts.istio_namespace.as_str();
    let services = futures::future::try_join_all(opts.expose.iter().map(|item| {
        let api: Api<Service> = Api::namespaced(client.clone(), &item.namespace);
        async move {
            let svc = get_opt(
                conn,
                &api,
                Request::new("get", "services")
                    .ns(&item.namespace)
                    .name(&item.service),
                &item.service,
            )
            .await?;
            Ok::<_, crate::kube::Error>((item.clone(), svc))
        }
    }));
    let mut seen = ExposeObserved::default();
    match era {
        Some(Era::Legacy) => {
            let gateway_name = Era::Legacy.default_gateway_service();
            let gateways: Api<Service> = Api::namespaced(client.clone(), istio_ns);
            let get_gateway = get_opt(
                conn,
                &gateways,
                Request::new("get", "services")
                    .ns(istio_ns)
                    .name(gateway_name),
                gateway_name,
            );
            let entries = async {
                let Some(version) = IstioKind::ServiceEntry.served_version(conn).await? else {
                    return Ok((None, Vec::new(), false));
                };
                let ar = IstioKind::ServiceEntry.resource(&version);
                let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                let params = ListParams::default();
                let resource = IstioKind::ServiceEntry.resource_name();
                match crate::read::list_all(
                    conn,
                    &all,
                    Request::new("list", &resource),
                    &params,
                    Some,
                )
                .await
                {
                    Ok(list) => Ok((Some(version), list, false)),
                    Err(e) if e.code() == Some(403) => {
                        let vm_ns = opts.vm_namespace.as_str();
                        let mine: Api<DynamicObject> =
                            Api::namespaced_with(client.clone(), vm_ns, &ar);
                        let list = crate::read::list_all(
                            conn,
                            &mine,
                            Request::new("list", &resource).ns(vm_ns),
                            &params,
                            Some,
                        )
                        .await?;
                        Ok((Some(version), list, true))
                    }
                    Err(e) => Err(e),
                }
            };
            let (services, gateway, (version, entries, namespace_only)) =
                tokio::try_join!(services, get_gateway, entries)?;
            seen.services = services;
            seen.gateway_service = gateway;
            seen.service_entry_version = version;
            seen.service_entries = entries;
            seen.entries_namespace_only = namespace_only;
        }
        Some(Era::Modern) => {
            let eastwest: Api<Service> = Api::namespaced(client.clone(), istio_ns);
            let selector = format!("istio={}", expose::EASTWEST_LABEL);
            let params = ListParams::default().labels(&selector);
            let list_eastwest = crate::read::list_all(
                conn,
                &eastwest,
                Request::new("list", "services").ns(istio_ns),
                &params,
                |_: Service| Some(()),
            );
            let get_gateway = async {
                let Some(version) = IstioKind::Gateway.served_version(conn).await? else {
                    return Ok(None);
                };
                let ar = IstioKind::Gateway.resource(&version);
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), istio_ns, &ar);
                get_opt(
                    conn,
                    &api,
                    Request::new("get", IstioKind::Gateway.resource_name())
                        .ns(istio_ns)
                        .name(expose::CROSS_NETWORK_GATEWAY),
                    expose::CROSS_NETWORK_GATEWAY,
                )
                .await
            };
            let (services, eastwest, gateway) =
                tokio::try_join!(services, list_eastwest, get_gateway)?;
            seen.services = services;
            seen.eastwest_services = eastwest.len();
            seen.cross_network_gateway = gateway;
        }
        None => seen.services = services.await?,
    }
    Ok(seen)
}
