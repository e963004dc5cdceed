//! Reading the cluster: era detection, one concurrent batch of reads, then the token.

use std::collections::BTreeMap;

use ::kube::Api;
use ::kube::api::{DynamicObject, PostParams};
use ::kube::core::{ApiResource, GroupVersionKind};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use serde_json::Value;

use super::{Error, Options, TOKEN_AUDIENCE, legacy_service_account, modern};
use crate::istio::{self, Era, IstioKind};
use crate::kube::{Action, Connection};

/// What bundle read from the cluster (secrets held only as bytes; no `Debug` on purpose).
#[derive(Clone, Default)]
pub struct Observed {
    /// The era (given or detected).
    pub era: Option<Era>,
    /// The gateway Service, if one was read and exists.
    pub gateway_service: Option<Service>,
    /// Legacy: the `istio.<sa>` secret's decoded data (`None`: not found).
    pub identity: Option<BTreeMap<String, Vec<u8>>>,
    /// Legacy: `spec.cidrs` of the `kubernetes` ServiceCIDR (`None`: API not served or absent).
    pub service_cidrs: Option<Vec<String>>,
    /// Legacy: the `kubernetes` Service's ClusterIP.
    pub kubernetes_ip: Option<String>,
    /// Modern: the WorkloadGroup object.
    pub workload_group: Option<Value>,
    /// Modern: the mesh config ConfigMap's data.
    pub mesh_config: Option<BTreeMap<String, String>>,
    /// Modern: the sidecar injector ConfigMap's data (read only without --cluster-id).
    pub injector: Option<BTreeMap<String, String>>,
    /// Modern: `istio-ca-root-cert` in the VM namespace.
    pub root_cert: Option<BTreeMap<String, String>>,
    /// Modern: the bootstrap token.
    pub token: Option<String>,
}

async fn get_opt<K>(
    conn: &Connection,
    api: &Api<K>,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<K>, crate::kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut action = Action::new("get", resource).name(name);
    if let Some(ns) = namespace {
        action = action.ns(ns);
    }
    match conn.call(action, || api.get(name)).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn get_configmap(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, crate::kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(conn.client.clone(), namespace);
    Ok(get_opt(conn, &api, "configmaps", Some(namespace), name)
        .await?
        .map(|cm| cm.data.unwrap_or_default()))
}

/// The WorkloadGroup at the newest version the cluster serves (v1 from Istio 1.22).
async fn get_workload_group(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, crate::kube::Error> {
    let kind = IstioKind::WorkloadGroup;
    for version in kind.versions() {
        let ar = kind.resource(version);
        let api: Api<DynamicObject> = Api::namespaced_with(conn.client.clone(), namespace, &ar);
        // A 404 is "absent" or "version not served"; the older versions tell them apart.
        if let Some(obj) = get_opt(conn, &api, &kind.resource_name(), Some(namespace), name).await?
        {
            return Ok(Some(serde_json::to_value(obj).unwrap_or_default()));
        }
    }
    Ok(None)
}

async fn get_token(
    conn: &Connection,
    namespace: &str,
    service_account: &str,
    seconds: i64,
) -> Result<String, crate::kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(conn.client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![TOKEN_AUDIENCE.to_owned()],
            expiration_seconds: Some(seconds),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let params = PostParams::default();
    // A TokenRequest creates nothing lasting: repeating it after a transient failure is safe.
    let answer: TokenRequest = conn
        .call(
            Action::new("create", "serviceaccounts/token")
                .ns(namespace)
                .name(service_account),
            || api.create_subresource("token", service_account, &params, &request),
        )
        .await?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

async fn get_service(
    conn: &Connection,
    target: Option<&(String, String)>,
) -> Result<Option<Service>, crate::kube::Error> {
    let Some((namespace, name)) = target else {
        return Ok(None);
    };
    let api: Api<Service> = Api::namespaced(conn.client.clone(), namespace);
    get_opt(conn, &api, "services", Some(namespace), name).await
}

/// `spec.cidrs` of the default ServiceCIDR (`networking.k8s.io/v1`, Kubernetes 1.33+);
/// `None` when the API is not served, the object is absent or RBAC hides it.
async fn get_service_cidrs(conn: &Connection) -> Result<Option<Vec<String>>, crate::kube::Error> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "ServiceCIDR"),
        "servicecidrs",
    );
    let api: Api<DynamicObject> = Api::all_with(conn.client.clone(), &ar);
    let action = Action::new("get", "servicecidrs.networking.k8s.io").name("kubernetes");
    let found = match conn.call(action, || api.get("kubernetes")).await {
        Ok(obj) => Some(obj),
        // Not served (before 1.33), absent, or not readable for a namespace-scoped user (a
        // cluster-scoped read): all mean "fall back", which the warning then explains.
        Err(e) if e.is_not_found() || e.code() == Some(403) => None,
        Err(e) => return Err(e),
    };
    Ok(found.and_then(|obj| {
        let cidrs: Vec<String> = obj
            .data
            .pointer("/spec/cidrs")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        (!cidrs.is_empty()).then_some(cidrs)
    }))
}

/// Read everything the era needs, concurrently: era detection, then one batch of reads, then
/// (modern, when the ServiceAccount comes from the WorkloadGroup) the token.
pub async fn observe(conn: &Connection, opts: &Options) -> Result<Observed, Error> {
    let era = match opts.era {
        Some(era) => era,
        None => istio::detect_era(conn, &opts.istio_namespace)
            .await?
            .ok_or_else(|| Error::NoControlPlane {
                namespace: opts.istio_namespace.clone(),
            })?,
    };
    opts.check_era(era)?;
    let gateway = opts.gateway_service(era);
    tracing::info!(%era, gateway = ?gateway, "reading what the VM needs");
    let mut observed = Observed {
        era: Some(era),
        ..Observed::default()
    };
    match era {
        Era::Legacy => {
            let sa = legacy_service_account(opts);
            let secrets: Api<Secret> = Api::namespaced(conn.client.clone(), &opts.vm_namespace);
            let services: Api<Service> = Api::namespaced(conn.client.clone(), "default");
            let need_cidr = opts.service_cidr.is_none();
            let secret_name = format!("istio.{sa}");
            let (secret, gateway_service, cidrs, kubernetes) = tokio::try_join!(
                get_opt(
                    conn,
                    &secrets,
                    "secrets",
                    Some(&opts.vm_namespace),
                    &secret_name
                ),
                get_service(conn, gateway.as_ref()),
                async {
                    if need_cidr {
                        get_service_cidrs(conn).await
                    } else {
                        Ok(None)
                    }
                },
                async {
                    if need_cidr {
                        get_opt(conn, &services, "services", Some("default"), "kubernetes").await
                    } else {
                        Ok(None)
                    }
                },
            )?;
            observed.identity = secret.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            });
            observed.gateway_service = gateway_service;
            observed.service_cidrs = cidrs;
            observed.kubernetes_ip = kubernetes
                .and_then(|s| s.spec)
                .and_then(|s| s.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None");
        }
        Era::Modern => {
            let group = opts.workload_group.clone().unwrap_or_default();
            let revision = opts.revision.as_deref();
            let ns = &opts.vm_namespace;
            let mesh_cm = modern::mesh_configmap(revision);
            let injector_cm = modern::injector_configmap(revision);
            let (wg, mesh, injector, root, gateway_service, early_token) = tokio::try_join!(
                get_workload_group(conn, ns, &group),
                get_configmap(conn, &opts.istio_namespace, &mesh_cm),
                async {
                    if opts.cluster_id.is_none() {
                        get_configmap(conn, &opts.istio_namespace, &injector_cm).await
                    } else {
                        Ok(None)
                    }
                },
                get_configmap(conn, ns, istio::ROOT_CERT_CONFIGMAP),
                get_service(conn, gateway.as_ref()),
                async {
                    match &opts.service_account {
                        Some(sa) => get_token(conn, ns, sa, opts.token_seconds).await.map(Some),
                        None => Ok(None),
                    }
                },
            )?;
            observed.token = match (early_token, &wg) {
                (Some(token), _) => Some(token),
                (None, Some(obj)) => {
                    let sa = modern::WorkloadGroup::from_object(obj)
                        .map_or_else(|_| "default".to_owned(), |g| g.service_account);
                    Some(get_token(conn, ns, &sa, opts.token_seconds).await?)
                }
                (None, None) => None,
            };
            observed.workload_group = wg;
            observed.mesh_config = mesh;
            observed.injector = injector;
            observed.root_cert = root;
            observed.gateway_service = gateway_service;
        }
    }
    Ok(observed)
}
