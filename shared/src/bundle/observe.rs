//! Reading the cluster: era detection, one concurrent batch of reads, then the token (modern),
//! or the Service CIDR probe and the wait for Citadel's identity (legacy).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use ::kube::Api;
use ::kube::api::{DynamicObject, PostParams};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use serde_json::Value;

use super::cidr::{self, Probe};
use super::identity::{self, CurrentRoot};
use super::{Error, Options, TOKEN_AUDIENCE, legacy_service_account, modern};
use crate::istio::{self, CACERTS_SECRET, Era, IstioKind};
use crate::kube::{Connection, Request};
use crate::read::{self, Served};

/// How often `--wait` looks at Citadel's secret again (two GETs each time).
const POLL: Duration = Duration::from_millis(500);

/// What bundle read from the cluster (secrets held only as bytes; no `Debug` on purpose).
#[derive(Clone, Default)]
pub struct Observed {
    /// The era (given or detected).
    pub era: Option<Era>,
    /// The gateway Service, if one was read and exists.
    pub gateway_service: Option<Service>,
    /// Legacy: the `istio.<sa>` secret's decoded data (`None`: not found).
    pub identity: Option<BTreeMap<String, Vec<u8>>>,
    /// Legacy: `cacerts` in the Istio namespace, decoded (`None`: absent or unreadable).
    pub cacerts: Option<BTreeMap<String, Vec<u8>>>,
    /// Legacy: why `cacerts` could not be read (RBAC), when it could not.
    pub cacerts_unreadable: Option<String>,
    /// Legacy: whether the VM's ServiceAccount exists (Citadel issues `istio.<sa>` only then).
    pub service_account_exists: bool,
    /// Legacy: istio-citadel runs with `--self-signed-ca=true` (then it ignores `cacerts`).
    pub citadel_self_signed: bool,
    /// Legacy: how long bundle waited for the identity without it becoming ready
    /// (`None`: it was ready, or nobody waited).
    pub waited: Option<Duration>,
    /// Legacy: `spec.cidrs` of the `kubernetes` ServiceCIDR (`None`: API not served or absent).
    pub service_cidrs: Option<Vec<String>>,
    /// Legacy: the `networking.k8s.io` version the ServiceCIDR was read at.
    pub service_cidr_version: Option<String>,
    /// Legacy: what asking the API server for its Service range gave (when it was asked).
    pub cidr_probe: Option<Probe>,
    /// Legacy: the `kubernetes` Service's ClusterIP.
    pub kubernetes_ip: Option<String>,
    /// Legacy: the `/etc/hosts` lines of the `.global` ServiceEntries `prepare --expose` made in
    /// the VM namespace (`127.255.x.y <svc>.<ns>.global`).
    pub global_hosts: String,
    /// Things observing did that the operator must hear of (stderr notes).
    pub notes: Vec<String>,
    /// Modern: the WorkloadGroup object.
    pub workload_group: Option<Value>,
    /// Modern: why the cluster serves no WorkloadGroup, when it does not.
    pub workload_group_not_served: Option<String>,
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
    let mut action = Request::new("get", resource).name(name);
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

/// The WorkloadGroup at the version the cluster serves WorkloadGroup at (discovered per kind:
/// v1alpha3 only on Istio 1.8–1.12, v1beta1 from 1.13, v1 from 1.22). `Err(why)` inside when the
/// kind is not served at all.
async fn get_workload_group(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<Result<Option<Value>, String>, crate::kube::Error> {
    let kind = IstioKind::WorkloadGroup;
    let version = match read::served(conn, &kind.kind_ref()).await? {
        Served::At(v) => v,
        Served::Not(why) => return Ok(Err(why)),
    };
    let ar = kind.resource(&version);
    let api: Api<DynamicObject> = Api::namespaced_with(conn.client.clone(), namespace, &ar);
    Ok(Ok(get_opt(
        conn,
        &api,
        &kind.resource_name(),
        Some(namespace),
        name,
    )
    .await?
    .map(|obj| serde_json::to_value(obj).unwrap_or_default())))
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
            Request::new("create", "serviceaccounts/token")
                .ns(namespace)
                .name(service_account),
            || api.create_subresource("token", service_account, &params, &request),
        )
        .await?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

/// Legacy: the meshvm ServiceEntries of the VM namespace (`prepare --expose`). Read at
/// v1alpha3 without asking discovery (one request, inside the one concurrent batch): Istio 1.4
/// serves ServiceEntry only there (istio/istio@1.4.2
/// install/kubernetes/helm/istio-init/files/crd-10.yaml:3670-3673). None when the kind is not
/// served (404) or RBAC hides it (403): the hosts file then has the control plane alone.
async fn get_global_entries(
    conn: &Connection,
    namespace: &str,
) -> Result<Vec<DynamicObject>, crate::kube::Error> {
    let kind = IstioKind::ServiceEntry;
    let ar = kind.resource("v1alpha3");
    let api: Api<DynamicObject> = Api::namespaced_with(conn.client.clone(), namespace, &ar);
    let selector = format!(
        "{}={}",
        crate::scope::MANAGED_BY_LABEL,
        crate::scope::MANAGED_BY_VALUE
    );
    let params = ::kube::api::ListParams::default().labels(&selector);
    match read::list_all(
        conn,
        &api,
        Request::new("list", kind.resource_name()).ns(namespace),
        &params,
        Some,
    )
    .await
    {
        Ok(list) => Ok(list),
        Err(e) if e.code() == Some(403) || e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
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

/// `spec.cidrs` of the default ServiceCIDR and the version it was read at; `None` when the API is
/// not served (v1 from Kubernetes 1.33 on by default, v1beta1 1.31–1.32 when enabled: both are
/// asked at once, a 404 meaning "not served or absent"), or RBAC hides it.
async fn get_service_cidrs(
    conn: &Connection,
) -> Result<Option<(Vec<String>, String)>, crate::kube::Error> {
    let kind = read::SERVICE_CIDR;
    let get = |version: &'static str| async move {
        let ar = kind.resource(version);
        let api: Api<DynamicObject> = Api::all_with(conn.client.clone(), &ar);
        let action = Request::new("get", kind.resource_name()).name("kubernetes");
        match conn.call(action, || api.get("kubernetes")).await {
            Ok(obj) => Ok(Some((obj, version))),
            // Not served, absent, or not readable for a namespace-scoped user (a cluster-scoped
            // read): all mean "ask another way", which the output then explains.
            Err(e) if e.is_not_found() || e.code() == Some(403) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let answers = futures::future::try_join_all(kind.versions.iter().map(|v| get(v))).await?;
    Ok(answers.into_iter().flatten().find_map(|(obj, version)| {
        let cidrs: Vec<String> = obj
            .data
            .pointer("/spec/cidrs")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        (!cidrs.is_empty()).then(|| (cidrs, version.to_owned()))
    }))
}

/// Decoded Secret data, or `None` when absent.
async fn get_secret_data(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, crate::kube::Error> {
    let api: Api<Secret> = Api::namespaced(conn.client.clone(), namespace);
    Ok(get_opt(conn, &api, "secrets", Some(namespace), name)
        .await?
        .map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
}

/// `cacerts`, decoded; `Err` inside with the reason when RBAC hides it (then the root check is
/// skipped with a warning rather than failing the bundle).
async fn get_cacerts(
    conn: &Connection,
    istio_namespace: &str,
) -> Result<Result<Option<BTreeMap<String, Vec<u8>>>, String>, crate::kube::Error> {
    match get_secret_data(conn, istio_namespace, CACERTS_SECRET).await {
        Ok(data) => Ok(Ok(data)),
        Err(e) if e.code() == Some(403) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Whether the istio-citadel Deployment runs with `--self-signed-ca=true` (the flag defaults to
/// false: istio/istio@1.4.2 `security/cmd/istio_ca/main.go:222`; the helm chart sets it either
/// way: `charts/security/templates/deployment.yaml:58-60`).
fn self_signed_ca(deployment: &Deployment) -> bool {
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    containers.iter().any(|c| {
        let args: Vec<&str> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .map(String::as_str)
            .collect();
        args.iter().enumerate().any(|(i, a)| {
            matches!(*a, "--self-signed-ca=true" | "-self-signed-ca=true")
                || (matches!(*a, "--self-signed-ca" | "-self-signed-ca")
                    && args
                        .get(i + 1)
                        .is_none_or(|next| *next == "true" || next.starts_with('-')))
        })
    })
}

/// The root the legacy CA holds now, as bundle could read it; warnings when it could not tell.
pub(crate) fn current_root<'a>(
    observed: &'a Observed,
    istio_namespace: &str,
) -> (CurrentRoot<'a>, Option<String>) {
    if observed.citadel_self_signed {
        let warning = observed.cacerts.is_some().then(|| format!(
            "secret {istio_namespace}/{CACERTS_SECRET} exists, but istio-citadel runs with --self-signed-ca=true and ignores it: the bundle carries Citadel's self-signed root"
        ));
        return (CurrentRoot::SelfSigned, warning);
    }
    if let Some(why) = &observed.cacerts_unreadable {
        return (
            CurrentRoot::SelfSigned,
            Some(format!(
                "cannot read secret {istio_namespace}/{CACERTS_SECRET} ({why}): not checked that the identity is issued under the root Citadel holds now"
            )),
        );
    }
    match observed
        .cacerts
        .as_ref()
        .map(|c| c.get(crate::pki::ROOT_CERT))
    {
        None => (CurrentRoot::SelfSigned, None),
        Some(Some(root)) if crate::pki::root_identity(root).is_ok() => {
            (CurrentRoot::Cacerts(root), None)
        }
        Some(_) => (
            CurrentRoot::SelfSigned,
            Some(format!(
                "secret {istio_namespace}/{CACERTS_SECRET} has no usable root-cert.pem (Citadel cannot load it): not checked that the identity is issued under the cluster's root; `kubectl meshvm doctor` tells more"
            )),
        ),
    }
}

/// Legacy: wait (up to `--wait`) until Citadel's `istio.<sa>` exists and is issued under the root
/// in `cacerts`, reading the secret and `cacerts` again twice a second. Gives up quietly at the
/// deadline (recording how long it waited in [`Observed::waited`]): the plan names the cause.
pub async fn wait_for_identity(
    conn: &Connection,
    opts: &Options,
    observed: &mut Observed,
    spinner: &indicatif::ProgressBar,
) -> Result<(), Error> {
    let sa = legacy_service_account(opts);
    let secret = format!("{}/istio.{sa}", opts.vm_namespace);
    let secret_name = format!("istio.{sa}");
    let deadline = Instant::now() + opts.wait;
    loop {
        let (root, _) = current_root(observed, &opts.istio_namespace);
        let state = identity::judge(observed.identity.as_ref(), root, &secret, SystemTime::now());
        if state == identity::State::Ready {
            observed.waited = None;
            return Ok(());
        }
        let now = Instant::now();
        // Citadel issues secrets for existing ServiceAccounts only: nothing to wait for.
        let pointless = state == identity::State::Missing && !observed.service_account_exists;
        if pointless {
            observed.waited = Some(Duration::ZERO);
            return Ok(());
        }
        if now >= deadline {
            observed.waited = Some(opts.wait);
            return Ok(());
        }
        spinner.set_message(format!(
            "waiting for Citadel: secret {secret} ({}), {}s left",
            state.waiting_for(),
            (deadline - now).as_secs()
        ));
        tokio::time::sleep(POLL.min(deadline - now)).await;
        let (id, ca) = tokio::try_join!(
            get_secret_data(conn, &opts.vm_namespace, &secret_name),
            get_cacerts(conn, &opts.istio_namespace),
        )?;
        observed.identity = id;
        match ca {
            Ok(data) => {
                observed.cacerts = data;
                observed.cacerts_unreadable = None;
            }
            Err(why) => observed.cacerts_unreadable = Some(why),
        }
    }
}

/// Legacy: when neither `--service-cidr` nor the ServiceCIDR API gave the Service range, ask the
/// API server ([`cidr::probe`]). Called once the identity is ready, so a bundle that fails for
/// another reason sends no probe.
pub(super) async fn find_service_cidr(
    conn: &Connection,
    opts: &Options,
    observed: &mut Observed,
) -> Result<(), Error> {
    if opts.service_cidr.is_none() && observed.service_cidrs.is_none() {
        observed.cidr_probe = Some(
            cidr::probe(
                conn,
                &opts.vm_namespace,
                observed.kubernetes_ip.as_deref(),
                &mut observed.notes,
            )
            .await?,
        );
    }
    Ok(())
}

/// Read everything the era needs, concurrently: era detection (with, when a WorkloadGroup is
/// named, the discovery of its version alongside), then one batch of reads, then (modern, when
/// the ServiceAccount comes from the WorkloadGroup) the token.
pub async fn observe(conn: &Connection, opts: &Options) -> Result<Observed, Error> {
    let detect = async {
        match opts.era {
            Some(era) => Ok(Some(era)),
            None => istio::detect_era(conn, &opts.istio_namespace).await,
        }
    };
    // Only the modern era takes --workload-group: learn its version during era detection.
    let prefetch = async {
        if opts.workload_group.is_some() {
            read::served(conn, &IstioKind::WorkloadGroup.kind_ref())
                .await
                .map(|_| ())
        } else {
            Ok(())
        }
    };
    let (era, ()) = tokio::try_join!(detect, prefetch)?;
    let era = era.ok_or_else(|| Error::NoControlPlane {
        namespace: opts.istio_namespace.clone(),
    })?;
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
            let services: Api<Service> = Api::namespaced(conn.client.clone(), "default");
            let deployments: Api<Deployment> =
                Api::namespaced(conn.client.clone(), &opts.istio_namespace);
            let need_cidr = opts.service_cidr.is_none();
            let secret_name = format!("istio.{sa}");
            let accounts: Api<ServiceAccount> =
                Api::namespaced(conn.client.clone(), &opts.vm_namespace);
            let (
                secret,
                account,
                cacerts,
                citadel,
                gateway_service,
                cidrs,
                kubernetes,
                globals,
                (),
            ) = tokio::try_join!(
                get_secret_data(conn, &opts.vm_namespace, &secret_name),
                async {
                    match get_opt(
                        conn,
                        &accounts,
                        "serviceaccounts",
                        Some(&opts.vm_namespace),
                        &sa,
                    )
                    .await
                    {
                        Ok(a) => Ok(a.is_some()),
                        // Unknown: assume it exists, so bundle still waits for Citadel.
                        Err(e) if e.code() == Some(403) => Ok(true),
                        Err(e) => Err(e),
                    }
                },
                get_cacerts(conn, &opts.istio_namespace),
                async {
                    match get_opt(
                        conn,
                        &deployments,
                        "deployments.apps",
                        Some(&opts.istio_namespace),
                        "istio-citadel",
                    )
                    .await
                    {
                        // Reading it only refines a warning: a refusal is no failure.
                        Err(e) if e.code() == Some(403) => Ok(None),
                        other => other,
                    }
                },
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
                get_global_entries(conn, &opts.vm_namespace),
                async {
                    // The release decides how the Service range is asked for
                    // ([`cidr::probe`]): read now, not in a round trip of its own later.
                    if need_cidr {
                        read::server_version_if_readable(conn).await;
                    }
                    Ok(())
                },
            )?;
            observed.global_hosts = crate::global::global_hosts(&globals);
            observed.identity = secret;
            observed.service_account_exists = account;
            match cacerts {
                Ok(data) => observed.cacerts = data,
                Err(why) => observed.cacerts_unreadable = Some(why),
            }
            observed.citadel_self_signed = citadel.as_ref().is_some_and(self_signed_ca);
            observed.gateway_service = gateway_service;
            if let Some((cidrs, version)) = cidrs {
                observed.service_cidrs = Some(cidrs);
                observed.service_cidr_version = Some(version);
            }
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
            let wg = wg.unwrap_or_else(|why| {
                observed.workload_group_not_served = Some(why);
                None
            });
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

/// Modern `bundle --renew`: the current `istio-ca-root-cert` data of the VM namespace and a new
/// bootstrap token for its ServiceAccount (audience and lifetime as `bundle` asks for them),
/// read concurrently.
pub(super) async fn renew_credentials(
    conn: &Connection,
    namespace: &str,
    service_account: &str,
    seconds: i64,
) -> Result<(Option<BTreeMap<String, String>>, String), Error> {
    Ok(tokio::try_join!(
        get_configmap(conn, namespace, istio::ROOT_CERT_CONFIGMAP),
        get_token(conn, namespace, service_account, seconds),
    )?)
}
