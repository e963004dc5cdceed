//! What `prepare` will write, decided purely from what it observed: the objects, their actions,
//! and the refusal of a different `cacerts`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::expose::{self, Exposed};
use super::options::{Options, WorkloadGroupOptions};
use super::{Error, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::istio::{CACERTS_SECRET, Era};
use crate::pki::{self, CaMaterial};
use crate::plan::write::{Kind, PatchType, Resource, Same, Write};
use crate::plan::{Action, Change, Plan};

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// How a stored `cacerts` is judged the same as the wanted one after a lost race: the same
/// `type` and the same `data`, keys included (see [`same_secret_content`]).
pub const SECRET_CONTENT: Same = Same::Fields(&["type", "data"]);

/// How the era was settled, for the line prepare prints on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraSource {
    /// `--era`.
    Forced,
    /// From these control-plane Deployments.
    Detected(Vec<String>),
    /// No control plane runs in the Istio namespace (yet).
    Unknown,
}

/// Everything prepare reads from the cluster, fetched once.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The era to work in, when known.
    pub era: Option<Era>,
    /// How it was settled.
    pub era_source: Option<EraSource>,
    /// The Deployments of the Istio namespace.
    pub deployments: Vec<Deployment>,
    /// The Istio namespace, when it exists.
    pub istio_namespace: Option<Namespace>,
    /// `cacerts`, when it exists (only read when CA files were given).
    pub cacerts: Option<Secret>,
    /// The VM namespace, when it exists.
    pub vm_namespace: Option<Namespace>,
    /// The VM's ServiceAccount, when it exists.
    pub service_account: Option<ServiceAccount>,
    /// The VM's ServiceAccount by the one rule ([`crate::scope::service_account`]); `None`: `-s`,
    /// else the namespace's name.
    pub account: Option<crate::scope::Account>,
    /// The networking.istio.io version the cluster serves WorkloadGroup at, discovered per kind
    /// (when a WorkloadGroup is wanted): the WorkloadGroup is written at it.
    pub networking_version: Option<String>,
    /// The WorkloadGroup, when it exists.
    pub workload_group: Option<DynamicObject>,
    /// The WorkloadEntries of the VM namespace, when the WorkloadGroup exists.
    pub workload_entries: Vec<DynamicObject>,
    /// What `--expose` needs (read only when it was given).
    pub expose: ExposeObserved,
}

/// What `--expose` read: the Services, and (legacy) the ServiceEntries and the gateway, or
/// (modern) the cross-network path.
#[derive(Debug, Clone, Default)]
pub struct ExposeObserved {
    /// Each `--expose` item and its Service, `None` when it does not exist.
    pub services: Vec<(Exposed, Option<Service>)>,
    /// Legacy: the version the cluster serves ServiceEntry at (`None`: not served).
    pub service_entry_version: Option<String>,
    /// Legacy: every ServiceEntry the addresses are judged against (the cluster's, or only the
    /// VM namespace's when the cluster-wide list is refused).
    pub service_entries: Vec<DynamicObject>,
    /// Legacy: whether `service_entries` is the VM namespace's alone (RBAC refused the rest).
    pub entries_namespace_only: bool,
    /// Legacy: the ingress gateway Service the endpoints point at.
    pub gateway_service: Option<Service>,
    /// Modern: how many Services in the Istio namespace carry `istio=eastwestgateway`.
    pub eastwest_services: usize,
    /// Modern: the `cross-network-gateway` Gateway, when it exists.
    pub cross_network_gateway: Option<DynamicObject>,
}

impl Observed {
    /// The name of the VM's ServiceAccount.
    pub fn account_name(&self, opts: &Options) -> String {
        self.account.as_ref().map_or_else(
            || {
                opts.service_account
                    .clone()
                    .unwrap_or_else(|| opts.vm_namespace.clone())
            },
            |a| a.name.clone(),
        )
    }

    /// The Deployment that holds the mesh's CA key: istio-citadel (legacy) or istiod (modern).
    pub fn ca_deployment(&self) -> Option<&Deployment> {
        let wanted = |name: &str| match self.era {
            Some(Era::Legacy) => name == "istio-citadel",
            Some(Era::Modern) => name == "istiod" || name.starts_with("istiod-"),
            None => false,
        };
        self.deployments
            .iter()
            .find(|d| d.metadata.name.as_deref().is_some_and(wanted))
    }
}

/// The plan, and what prepare must tell the operator about the CA afterwards.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// One row per object, in write order.
    pub plan: Plan,
    /// The CA Deployment, when the control plane runs.
    pub ca_deployment: Option<String>,
    /// `cacerts` was written by an earlier run after the CA Deployment last (re)started.
    pub restart_due_earlier: bool,
}

/// The `cacerts` Secret exactly as `kubectl create secret generic cacerts --from-file=…` makes it:
/// type Opaque, the four file names as keys, the bytes unchanged, nothing else.
pub fn cacerts_secret(istio_namespace: &str, ca: &CaMaterial) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(CACERTS_SECRET.to_owned()),
            namespace: Some(istio_namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            ca.to_secret_data()
                .into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// Whether an existing Secret holds exactly these bytes under exactly these keys, as type Opaque.
pub fn same_secret_content(existing: &Secret, wanted: &Secret) -> bool {
    let opaque = |s: &Secret| s.type_.as_deref().unwrap_or("Opaque") == "Opaque";
    let data = |s: &Secret| s.data.clone().unwrap_or_default();
    opaque(existing) && opaque(wanted) && data(existing) == data(wanted)
}

/// The decoded `data` of a Secret.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// The refusal to replace a different `cacerts`, with both sides' roots.
pub fn ca_differs(istio_namespace: &str, existing: &Secret, wanted: &CaMaterial) -> Error {
    let existing_data = secret_data(existing);
    let in_cluster = existing_data
        .get(pki::ROOT_CERT)
        .map_or_else(
            || Err(format!("it has no {}", pki::ROOT_CERT)),
            |pem| pki::root_identities(pem).map_err(|e| e.to_string()),
        )
        .map(|roots| roots.iter().map(ToString::to_string).collect::<Vec<_>>());
    let from_files = pki::root_identities(wanted.root_cert.bytes())
        .map(|roots| roots.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    let same_root = existing_data
        .get(pki::ROOT_CERT)
        .and_then(|pem| pki::compare_roots(pem, wanted.root_cert.bytes()).ok())
        .is_some_and(|c| c.same());
    Error::CaDiffers {
        secret: format!("{istio_namespace}/{CACERTS_SECRET}"),
        in_cluster: in_cluster.unwrap_or_else(|e| vec![format!("unreadable: {e}")]),
        from_files,
        same_root,
        nothing_written: true,
    }
}

/// The Namespace object prepare applies for the VM (labelled so `--delete` knows it made it).
pub fn vm_namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
    })
}

/// The Istio namespace, plain as `kubectl create namespace istio-system` makes it.
pub fn istio_namespace_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// The VM's ServiceAccount.
pub fn service_account_object(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        },
    })
}

/// The WorkloadGroup with the fields and shape `istioctl x workload group create` gives it:
/// `spec.metadata` always present (labels/annotations when given), `spec.template.serviceAccount`
/// always set, ports/network/weight when given.
pub fn workload_group_object(
    api_version: &str,
    namespace: &str,
    service_account: &str,
    wg: &WorkloadGroupOptions,
) -> Value {
    let mut metadata = serde_json::Map::new();
    if !wg.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(wg.annotations));
    }
    if !wg.labels.is_empty() {
        metadata.insert("labels".into(), json!(wg.labels));
    }
    let mut template = serde_json::Map::new();
    if let Some(network) = &wg.network {
        template.insert("network".into(), json!(network));
    }
    if !wg.ports.is_empty() {
        template.insert("ports".into(), json!(wg.ports));
    }
    template.insert("serviceAccount".into(), json!(service_account));
    if let Some(weight) = wg.weight.filter(|w| *w > 0) {
        template.insert("weight".into(), json!(weight));
    }
    json!({
        "apiVersion": api_version,
        "kind": "WorkloadGroup",
        "metadata": {"name": wg.name, "namespace": namespace},
        "spec": {"metadata": metadata, "template": template},
    })
}

pub use crate::plan::write::contains;

/// The annotation Istio's auto-registration puts on each WorkloadEntry it makes from a group,
/// naming the group (istio/istio@1.8.0 pilot/pkg/controller/workloadentry/workloadentry_controller.go,
/// `AutoRegistrationGroupAnnotation`; the same key through 1.24).
pub const AUTO_REGISTRATION_GROUP: &str = "istio.io/autoRegistrationGroup";

/// Whether `entry` was made from `group`: Istio's auto-registration annotation names it, or the
/// entry carries every label of the group's `spec.metadata.labels` (what `register
/// --workload-group` and auto-registration copy onto it).
pub fn made_from_group(entry: &DynamicObject, group: &DynamicObject) -> bool {
    let name = group.metadata.name.as_deref().unwrap_or_default();
    if entry
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(AUTO_REGISTRATION_GROUP))
        .is_some_and(|g| g == name)
    {
        return true;
    }
    let Some(labels) = group
        .data
        .pointer("/spec/metadata/labels")
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
    else {
        return false;
    };
    let have = entry.data.pointer("/spec/labels");
    labels
        .iter()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// Re-running prepare with other `--ports` or `--labels` than the existing WorkloadGroup holds:
/// the WorkloadEntries and bundles made from the old group keep the old values. One warning naming
/// each such entry and the commands that refresh entries and bundles; none when nothing differs.
pub fn stale_from_group(observed: &Observed, opts: &Options) -> Vec<String> {
    let (Some(wg), Some(existing)) = (&opts.workload_group, &observed.workload_group) else {
        return Vec::new();
    };
    let ns = &opts.vm_namespace;
    let old_ports = existing
        .data
        .pointer("/spec/template/ports")
        .cloned()
        .unwrap_or(Value::Null);
    let old_labels = existing
        .data
        .pointer("/spec/metadata/labels")
        .cloned()
        .unwrap_or(Value::Null);
    let mut changed = Vec::new();
    if !wg.ports.is_empty() && old_ports != json!(wg.ports) {
        changed.push(format!(
            "ports {} → {}",
            pairs_text(&old_ports),
            pairs_text(&json!(wg.ports))
        ));
    }
    if !wg.labels.is_empty() && old_labels != json!(wg.labels) {
        changed.push(format!(
            "labels {} → {}",
            pairs_text(&old_labels),
            pairs_text(&json!(wg.labels))
        ));
    }
    if changed.is_empty() {
        return Vec::new();
    }
    let entries: Vec<&DynamicObject> = observed
        .workload_entries
        .iter()
        .filter(|e| made_from_group(e, existing))
        .collect();
    let group = &wg.name;
    let mut text = format!(
        "workloadgroup {ns}/{group} changes ({}): what was made from the old group is stale;",
        changed.join("; ")
    );
    if entries.is_empty() {
        text.push_str(" no WorkloadEntry in the namespace was made from it;");
    } else {
        let names: Vec<String> = entries
            .iter()
            .map(|e| e.metadata.name.clone().unwrap_or_default())
            .collect();
        let _ = write!(
            text,
            " workloadentries {} — refresh each with",
            names.join(", ")
        );
        let commands: Vec<String> = entries
            .iter()
            .map(|e| {
                format!(
                    " `kubectl meshvm register --workload-entry {} --address {} -n {ns} --workload-group {group}`",
                    e.metadata.name.as_deref().unwrap_or_default(),
                    e.data
                        .pointer("/spec/address")
                        .and_then(Value::as_str)
                        .unwrap_or("IP")
                )
            })
            .collect();
        text.push_str(&commands.join(","));
        text.push(';');
    }
    let _ = write!(
        text,
        " bundles made from the old group carry the old values: make each again with `kubectl meshvm bundle -n {ns} --workload-group {group} -d DIR --force`"
    );
    vec![text]
}

fn pairs_text(map: &Value) -> String {
    match map.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => "(none)".into(),
    }
}

fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// The latest of a list of times; `None` when there is none.
fn latest(times: impl IntoIterator<Item = Option<Time>>) -> Option<Time> {
    times.into_iter().flatten().max_by_key(|t| t.0)
}

/// When an object was last written, from its creation and managed-fields times.
fn written_at(meta: &ObjectMeta) -> Option<Time> {
    latest(
        std::iter::once(meta.creation_timestamp.clone())
            .chain(meta.managed_fields.iter().flatten().map(|m| m.time.clone())),
    )
}

/// When a Deployment's pods last (re)started: its creation or the last `rollout restart`.
/// The pod template's `restartedAt` (what `kubectl rollout restart` and prepare stamp).
fn restarted_at(d: &Deployment) -> Option<Time> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(RESTARTED_AT))
        .and_then(|t| serde_json::from_value::<Time>(Value::String(t.clone())).ok())
}

/// Whether the CA Deployment last started before `cacerts` was written, so it still signs with
/// the CA it loaded then. Both times have second resolution: a restart stamped in the same second
/// as the write followed it (prepare writes, then restarts); a Deployment *created* in that same
/// second may have started either side of it, and a needless restart is cheap next to a bundle
/// of certificates from the old root, so it counts as due.
fn restart_due(d: &Deployment, secret_time: &Time) -> bool {
    match restarted_at(d).filter(|r| {
        d.metadata
            .creation_timestamp
            .as_ref()
            .is_none_or(|c| r.0 >= c.0)
    }) {
        Some(restarted) => restarted.0 < secret_time.0,
        None => d
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|created| created.0 <= secret_time.0),
    }
}

/// The strategic merge patch `kubectl rollout restart` sends: the pod template's `restartedAt`
/// set to `now` (RFC 3339), so the Deployment rolls its pods.
pub fn restart_patch(now: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}})
}

/// Build the plan. Pure: refuses a different `cacerts` (unless `--force`) and a WorkloadGroup
/// outside the modern era, before anything is written.
pub fn plan(
    observed: &Observed,
    opts: &Options,
    ca: Option<&CaMaterial>,
) -> Result<Prepared, Error> {
    let mut plan = Plan::default();
    let istio_ns = opts.istio_namespace.as_str();
    let vm_ns = opts.vm_namespace.as_str();
    let mut restart_due_earlier = false;

    if let Some(ca) = ca {
        plan.push(match &observed.istio_namespace {
            Some(_) => Change::new(Action::Unchanged, Kind::Namespace, None, istio_ns)
                .object(istio_namespace_object(istio_ns)),
            None => Change::new(Action::Create, Kind::Namespace, None, istio_ns)
                .object(istio_namespace_object(istio_ns))
                .write(Write::apply(Kind::Namespace, istio_namespace_object(istio_ns)).seen(None)),
        });
        let wanted = cacerts_secret(istio_ns, ca);
        let root = pki::root_identity(ca.root_cert.bytes())
            .map(|r| format!("root {}", r.subject))
            .unwrap_or_default();
        let change = match &observed.cacerts {
            None => Change::new(Action::Create, Kind::Secret, Some(istio_ns), CACERTS_SECRET)
                .detail(root),
            Some(existing) if same_secret_content(existing, &wanted) => {
                if let (Some(secret_time), Some(dep)) =
                    (written_at(&existing.metadata), observed.ca_deployment())
                {
                    restart_due_earlier = restart_due(dep, &secret_time);
                }
                Change::new(
                    Action::Unchanged,
                    Kind::Secret,
                    Some(istio_ns),
                    CACERTS_SECRET,
                )
                .detail(format!("same CA ({root})"))
            }
            Some(_) if opts.force => Change::new(
                Action::Update,
                Kind::Secret,
                Some(istio_ns),
                CACERTS_SECRET,
            )
            .detail(format!(
                "--force: replaces a different CA ({root}); every workload needs new certificates"
            )),
            Some(existing) => return Err(ca_differs(istio_ns, existing, ca)),
        };
        let mut object = serde_json::to_value(&wanted).map_err(std::io::Error::other)?;
        let write = match change.action {
            // Created when absent; a concurrent prepare's cacerts is judged by its content, and
            // only --force replaces a different one (guarded by what was read).
            Action::Create if opts.force => {
                Some(Write::create_or_replace(Kind::Secret, object.clone()))
            }
            Action::Create => Some(Write::create(Kind::Secret, object.clone())),
            Action::Update => {
                // The replace is guarded: it only lands on the Secret we compared against.
                object["metadata"]["resourceVersion"] = json!(
                    observed
                        .cacerts
                        .as_ref()
                        .and_then(|s| s.metadata.resource_version.clone())
                );
                Some(Write::replace(Kind::Secret, object.clone()))
            }
            _ => None,
        };
        let change = change.object(object);
        plan.push(match write {
            Some(write) => change.write(write.same(SECRET_CONTENT)),
            None => change,
        });
    }

    if ca.is_none()
        && opts.restart_control_plane
        && let (Some(secret_time), Some(dep)) = (
            observed
                .cacerts
                .as_ref()
                .and_then(|c| written_at(&c.metadata)),
            observed.ca_deployment(),
        )
    {
        // `--restart-control-plane` without CA files: the same judgement as after a re-run
        // with the files that are already stored.
        restart_due_earlier = restart_due(dep, &secret_time);
    }

    match &observed.vm_namespace {
        Some(ns) if is_terminating(ns) => {
            return Err(Error::NamespaceTerminating {
                namespace: vm_ns.to_owned(),
            });
        }
        Some(_) => plan.push(
            Change::new(Action::Unchanged, Kind::Namespace, None, vm_ns)
                .object(vm_namespace_object(vm_ns)),
        ),
        None => plan.push(
            Change::new(Action::Create, Kind::Namespace, None, vm_ns)
                .object(vm_namespace_object(vm_ns))
                .write(Write::apply(Kind::Namespace, vm_namespace_object(vm_ns)).seen(None)),
        ),
    }

    let sa = observed.account_name(opts);
    let sa = sa.as_str();
    let action = if observed.service_account.is_some() {
        Action::Unchanged
    } else {
        Action::Create
    };
    let change = Change::new(action, Kind::ServiceAccount, Some(vm_ns), sa)
        .object(service_account_object(vm_ns, sa));
    plan.push(if action == Action::Create {
        change
            .write(Write::apply(Kind::ServiceAccount, service_account_object(vm_ns, sa)).seen(None))
    } else {
        change
    });

    if let Some(wg) = &opts.workload_group {
        match observed.era {
            Some(Era::Modern) => {}
            Some(Era::Legacy) => {
                return Err(Error::WorkloadGroupNeedsModern {
                    istio_namespace: istio_ns.to_owned(),
                });
            }
            None => {
                return Err(Error::EraUnknown {
                    istio_namespace: istio_ns.to_owned(),
                });
            }
        }
        let version = observed
            .networking_version
            .clone()
            .ok_or_else(|| Error::NoIstioApi)?;
        let wanted =
            workload_group_object(&format!("networking.istio.io/{version}"), vm_ns, sa, wg);
        let change = match &observed.workload_group {
            None => Change::new(Action::Create, Kind::WorkloadGroup, Some(vm_ns), &wg.name).detail(
                if sa == "default" {
                    "serviceAccount default".to_owned()
                } else {
                    format!(
                        "serviceAccount {sa}: the ServiceAccount above (istioctl's default is \"default\")"
                    )
                },
            ),
            Some(existing) => {
                let have = existing.data.get("spec").cloned().unwrap_or(Value::Null);
                if contains(&have, &wanted["spec"]) {
                    Change::new(Action::Unchanged, Kind::WorkloadGroup, Some(vm_ns), &wg.name)
                } else {
                    Change::new(Action::Update, Kind::WorkloadGroup, Some(vm_ns), &wg.name)
                        .detail("spec differs: applies the flags' fields")
                }
            }
        };
        // Written at the version the object names: the one this cluster serves the kind at.
        let seen = observed
            .workload_group
            .as_ref()
            .and_then(|g| serde_json::to_value(g).ok());
        plan.push(if change.writes() {
            change
                .object(wanted.clone())
                .write(Write::apply(Kind::WorkloadGroup, wanted).seen(seen))
        } else {
            change.object(wanted)
        });
    }

    if !opts.expose.is_empty() {
        plan_expose(&mut plan, observed, opts)?;
    }

    let ca_deployment = observed
        .ca_deployment()
        .and_then(|d| d.metadata.name.clone());
    let ca_row = plan
        .changes
        .iter()
        .position(|c| c.kind == Kind::Secret && c.write.is_some());
    if opts.restart_control_plane
        && let Some(name) = &ca_deployment
        && (ca_row.is_some() || restart_due_earlier)
    {
        // The body (restartedAt = now) is stamped when it is sent.
        let mut restart = Write::patch(
            Resource::new(Kind::Deployment, "v1"),
            PatchType::Strategic,
            restart_patch(""),
        );
        if let Some(row) = ca_row {
            restart = restart.after(row);
        }
        plan.push(
            Change::new(Action::Other, Kind::Deployment, Some(istio_ns), name)
                .detail("rollout restart: load the new CA key")
                .write(restart),
        );
    }
    Ok(Prepared {
        plan,
        ca_deployment,
        restart_due_earlier,
    })
}

/// `--expose`: refuse a missing Service (before any write); modern, refuse a missing
/// cross-network path; legacy, one `.global` ServiceEntry row per Service, its address kept when
/// meshvm's entry for the host holds one, else the first free from the host's hash.
pub(crate) fn plan_expose(
    plan: &mut Plan,
    observed: &Observed,
    opts: &Options,
) -> Result<(), Error> {
    let seen = &observed.expose;
    let missing: Vec<String> = seen
        .services
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(e, _)| format!("{}/{}", e.namespace, e.service))
        .collect();
    if !missing.is_empty() {
        return Err(Error::ExposedServiceMissing { missing });
    }
    let istio_ns = opts.istio_namespace.as_str();
    let vm_ns = opts.vm_namespace.as_str();
    match observed.era {
        None => Err(Error::EraUnknown {
            istio_namespace: istio_ns.to_owned(),
        }),
        Some(Era::Modern) => match expose::cross_network_problem(
            istio_ns,
            seen.eastwest_services,
            seen.cross_network_gateway.as_ref(),
        ) {
            Some(problem) => Err(Error::CrossNetworkMissing {
                istio_namespace: istio_ns.to_owned(),
                problem,
            }),
            None => Ok(()),
        },
        Some(Era::Legacy) => {
            let version = seen
                .service_entry_version
                .clone()
                .ok_or(Error::ServiceEntryNotServed)?;
            let gateway_name = format!("{istio_ns}/{}", Era::Legacy.default_gateway_service());
            let gateway = seen
                .gateway_service
                .as_ref()
                .ok_or_else(|| Error::ExposeGateway {
                    gateway: gateway_name.clone(),
                    problem: "it does not exist".into(),
                })
                .and_then(|svc| {
                    crate::istio::gateway_address(svc).map_err(|p| Error::ExposeGateway {
                        gateway: gateway_name.clone(),
                        problem: match p {
                            crate::istio::GatewayProblem::Hostname(h) => {
                                format!("its load balancer has only the hostname {h}")
                            }
                            crate::istio::GatewayProblem::NoAddress => {
                                "it has no load balancer address yet".into()
                            }
                            crate::istio::GatewayProblem::Invalid(why) => why,
                        },
                    })
                })?;
            let in_vm_ns = |e: &&DynamicObject| e.metadata.namespace.as_deref() == Some(vm_ns);
            let ours: Vec<DynamicObject> = seen
                .service_entries
                .iter()
                .filter(in_vm_ns)
                .cloned()
                .collect();
            let mut used = expose::addresses_in_use(&seen.service_entries);
            let api_version = format!("networking.istio.io/{version}");
            for (item, service) in &seen.services {
                let service = service.as_ref().expect("missing Services were refused");
                let name = item.entry_name();
                let host = item.host();
                let existing = ours
                    .iter()
                    .find(|e| e.metadata.name.as_deref() == Some(name.as_str()));
                if let Some(e) = existing
                    && !expose::is_ours(e)
                {
                    return Err(Error::ServiceEntryNotOurs {
                        entry: format!("{vm_ns}/{name}"),
                    });
                }
                let me = format!("{vm_ns}/{name}");
                // Kept when this entry holds it alone, or held it first (a concurrent run that
                // picked the same address moves instead); never one an older entry holds.
                let kept = expose::address_of(&ours, &host).filter(|ip| {
                    used.get(ip).is_none_or(|who| who.iter().all(|w| *w == me))
                        || expose::holds_first(&seen.service_entries, &me, *ip)
                });
                let taken: BTreeSet<std::net::Ipv4Addr> = used.keys().copied().collect();
                let address = match kept {
                    Some(ip) => ip,
                    None => expose::allocate(&host, &taken)
                        .ok_or_else(|| Error::GlobalAddressesExhausted { host: host.clone() })?,
                };
                used.entry(address).or_default().push(me);
                let ports = expose::entry_ports(service);
                if ports.is_empty() {
                    return Err(Error::ExposedServiceNoPorts {
                        service: format!("{}/{}", item.namespace, item.service),
                    });
                }
                let wanted = expose::service_entry_object(
                    &api_version,
                    vm_ns,
                    item,
                    &ports,
                    address,
                    gateway,
                );
                let detail = format!(
                    "{host} → {address}; endpoint {gateway}:{}",
                    crate::istio::MULTI_NETWORK_PORT
                );
                let change = match existing {
                    None => Change::new(Action::Create, Kind::ServiceEntry, Some(vm_ns), &name),
                    Some(e) => {
                        let have = e.data.get("spec").cloned().unwrap_or(Value::Null);
                        if have == wanted["spec"] {
                            Change::new(Action::Unchanged, Kind::ServiceEntry, Some(vm_ns), &name)
                        } else {
                            Change::new(Action::Update, Kind::ServiceEntry, Some(vm_ns), &name)
                        }
                    }
                }
                .detail(detail);
                plan.push(if change.writes() {
                    change
                        .object(wanted.clone())
                        .write(Write::apply(Kind::ServiceEntry, wanted).owning(&["/spec"]))
                } else {
                    change.object(wanted)
                });
            }
            Ok(())
        }
    }
}
