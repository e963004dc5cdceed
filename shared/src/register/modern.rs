//! Modern registration: a WorkloadEntry (server-side apply) and, on request, a Service that
//! selects it. Pure: it takes what was observed and returns the rows and writes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use kube::core::DynamicObject;
use serde_json::{Map, Value, json};

use super::legacy::service_port;
use super::{Error, Planned};
use crate::names::NamedPort;
use crate::plan::write::{Kind, Resource, Write};
use crate::plan::{Action, Change};

/// The spec fields of a WorkloadEntry meshvm decides alone: set exactly on every write (a label
/// or port dropped from the flags goes from the entry too).
pub const ENTRY_OWNED: [&str; 5] = [
    "/spec/address",
    "/spec/labels",
    "/spec/ports",
    "/spec/serviceAccount",
    "/spec/network",
];

/// What a WorkloadEntry registration wants, resolved from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Namespace of the entry.
    pub namespace: String,
    /// The WorkloadEntry's name.
    pub name: String,
    /// The VM's address (absent for `--deregister`).
    pub address: Option<IpAddr>,
    /// `-l` labels (they win over the WorkloadGroup's).
    pub labels: BTreeMap<String, String>,
    /// `-a` annotations for the entry's metadata.
    pub annotations: BTreeMap<String, String>,
    /// `-s`, else the WorkloadGroup's, else `default`.
    pub service_account: Option<String>,
    /// `--network`, else the WorkloadGroup's.
    pub network: Option<String>,
    /// `--ports`, else the WorkloadGroup's.
    pub ports: Vec<NamedPort>,
    /// `--service`: a Service that must select the entry.
    pub service: Option<String>,
    /// `--workload-group`.
    pub workload_group: Option<String>,
    /// Whether an existing `--service` may be changed.
    pub update_service: bool,
    /// `--context`, carried into the commands hints print.
    pub context: Option<String>,
}

/// What the cluster holds for a WorkloadEntry registration.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The served `networking.istio.io` version with WorkloadEntry (v1 → v1beta1 → v1alpha3).
    pub version: String,
    /// The WorkloadGroup, when `--workload-group` is given and it exists.
    pub group: Option<DynamicObject>,
    /// The WorkloadEntry, if it exists.
    pub entry: Option<DynamicObject>,
    /// The `--service` Service, if it exists.
    pub service: Option<Service>,
    /// Whether the ServiceAccount the entry names exists (`None`: not looked up).
    pub service_account_exists: Option<bool>,
    /// The namespace does not exist.
    pub namespace_missing: bool,
}

/// The ServiceAccount the entry will name: `-s`, else the WorkloadGroup template's, else `default`.
pub fn service_account(want: &Want, group: Option<&DynamicObject>) -> String {
    want.service_account
        .clone()
        .or_else(|| {
            template(group)
                .and_then(|t| t.get("serviceAccount"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "default".into())
}

fn template(group: Option<&DynamicObject>) -> Option<&Map<String, Value>> {
    group?.data.pointer("/spec/template")?.as_object()
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The entry's labels: the WorkloadGroup's template labels, then its `metadata.labels` (what
/// Istio's auto-registration gives entries), then `-l`.
pub fn labels(want: &Want, group: Option<&DynamicObject>) -> BTreeMap<String, String> {
    let mut labels = string_map(template(group).and_then(|t| t.get("labels")));
    labels.extend(string_map(
        group.and_then(|g| g.data.pointer("/spec/metadata/labels")),
    ));
    labels.extend(want.labels.clone());
    labels
}

fn ports(want: &Want, group: Option<&DynamicObject>) -> Vec<NamedPort> {
    if !want.ports.is_empty() {
        return want.ports.clone();
    }
    template(group)
        .and_then(|t| t.get("ports"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(name, port)| {
                    Some(NamedPort {
                        name: name.clone(),
                        port: u16::try_from(port.as_u64()?).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The spec fields meshvm owns, as server-side apply sends them.
pub fn entry_spec(want: &Want, group: Option<&DynamicObject>, address: IpAddr) -> Value {
    let mut spec = Map::new();
    spec.insert("address".into(), address.to_string().into());
    let labels = labels(want, group);
    if !labels.is_empty() {
        spec.insert("labels".into(), json!(labels));
    }
    let ports = ports(want, group);
    if !ports.is_empty() {
        let map: Map<String, Value> = ports
            .iter()
            .map(|p| (p.name.clone(), Value::from(p.port)))
            .collect();
        spec.insert("ports".into(), Value::Object(map));
    }
    spec.insert("serviceAccount".into(), service_account(want, group).into());
    let network = want.network.clone().or_else(|| {
        template(group)
            .and_then(|t| t.get("network"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if let Some(network) = network {
        spec.insert("network".into(), network.into());
    }
    Value::Object(spec)
}

/// The WorkloadEntry to apply.
pub fn entry_object(want: &Want, observed: &Observed, address: IpAddr) -> Value {
    let spec = entry_spec(want, observed.group.as_ref(), address);
    let mut metadata = json!({"name": want.name, "namespace": want.namespace});
    if let Some(labels) = spec.get("labels") {
        // Also on the object, so `kubectl get workloadentries -l app=vm` finds it.
        metadata["labels"] = labels.clone();
    }
    if !want.annotations.is_empty() {
        metadata["annotations"] = json!(want.annotations);
    }
    json!({
        "apiVersion": format!("networking.istio.io/{}", observed.version),
        "kind": "WorkloadEntry",
        "metadata": metadata,
        "spec": spec,
    })
}

/// Whether the entry already holds exactly the fields meshvm sets.
fn entry_matches(current: &DynamicObject, desired: &Value) -> bool {
    let empty = Map::new();
    let have = current
        .data
        .get("spec")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let want = desired["spec"].as_object().unwrap_or(&empty);
    let same_spec = ["address", "labels", "ports", "serviceAccount", "network"]
        .iter()
        .all(|k| have.get(*k) == want.get(*k));
    let same_meta = ["labels", "annotations"].iter().all(|k| {
        let want_map = string_map(desired["metadata"].get(*k));
        let have_map = match *k {
            "labels" => current.metadata.labels.clone().unwrap_or_default(),
            _ => current.metadata.annotations.clone().unwrap_or_default(),
        };
        want_map.iter().all(|(k, v)| have_map.get(k) == Some(v))
    });
    same_spec && same_meta
}

/// Whether `selector` selects `labels` (every pair present).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Plan the `--service` Service: create one selecting the entry, or check (and, with
/// `--update-service`, fix) the ports of an existing one; warn when it would not select the entry.
fn plan_service(
    planned: &mut Planned,
    want: &Want,
    observed: &Observed,
    name: &str,
    labels: &BTreeMap<String, String>,
    ports: &[NamedPort],
) -> Result<(), Error> {
    let Some(current) = &observed.service else {
        if labels.is_empty() {
            return Err(Error::NoLabelsToSelect {
                service: name.to_owned(),
            });
        }
        let object = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": want.namespace},
            "spec": {
                "selector": labels,
                "ports": ports.iter().map(service_port).collect::<Vec<_>>(),
            },
        });
        planned.plan.push(
            Change::new(Action::Create, Kind::Service, Some(&want.namespace), name)
                .detail(format!("selects {}", pairs(labels)))
                .object(object.clone())
                .write(Write::apply(Kind::Service, object)),
        );
        return Ok(());
    };
    let selector = current
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if !selects(&selector, labels) {
        planned.warnings.push(if selector.is_empty() {
            format!(
                "service {}/{name} has no selector: it will not select workloadentry {} (labels {})",
                want.namespace,
                want.name,
                pairs(labels)
            )
        } else {
            format!(
                "service {}/{name} selector {} would not select workloadentry {} (labels {})",
                want.namespace,
                pairs(&selector),
                want.name,
                pairs(labels)
            )
        });
    }
    let mut fixed = current.clone();
    let have = fixed
        .spec
        .get_or_insert_with(ServiceSpec::default)
        .ports
        .get_or_insert_with(Vec::new);
    let mut missing = Vec::new();
    for p in ports {
        if !have
            .iter()
            .any(|s| s.name.as_deref() == Some(p.name.as_str()))
        {
            missing.push(format!("port {} ({}) is missing", p.name, p.port));
            have.push(service_port(p));
        }
    }
    if missing.is_empty() {
        planned.plan.push(
            Change::new(
                Action::Unchanged,
                Kind::Service,
                Some(&want.namespace),
                name,
            )
            .detail("serves the entry's ports"),
        );
        return Ok(());
    }
    if !want.update_service {
        return Err(Error::ServiceDiffers {
            namespace: want.namespace.clone(),
            name: name.to_owned(),
            differences: missing.join("; "),
            keep_identity: None,
        });
    }
    let mut object = serde_json::to_value(&fixed).unwrap_or_default();
    object["apiVersion"] = "v1".into();
    object["kind"] = "Service".into();
    planned.plan.push(
        Change::new(Action::Update, Kind::Service, Some(&want.namespace), name)
            .detail(missing.join("; "))
            .object(object.clone())
            .write(Write::replace(Kind::Service, object)),
    );
    Ok(())
}

/// Plan `register --workload-entry NAME --address IP …`.
pub fn plan_entry(observed: &Observed, want: &Want) -> Result<Planned, Error> {
    let Some(address) = want.address else {
        return Ok(plan_delete(observed, want));
    };
    if observed.namespace_missing {
        return Err(super::legacy::not_prepared(
            true,
            &want.namespace,
            &service_account(want, None),
            want.workload_group.as_deref(),
            want.context.as_deref(),
        ));
    }
    if let Some(group) = &want.workload_group
        && observed.group.is_none()
    {
        return Err(Error::WorkloadGroupMissing {
            namespace: want.namespace.clone(),
            name: group.clone(),
        });
    }
    let account = service_account(want, observed.group.as_ref());
    if observed.namespace_missing || observed.service_account_exists == Some(false) {
        return Err(super::legacy::not_prepared(
            observed.namespace_missing,
            &want.namespace,
            &account,
            want.workload_group.as_deref(),
            want.context.as_deref(),
        ));
    }
    let mut planned = Planned::default();
    let object = entry_object(want, observed, address);
    let spec = &object["spec"];
    let detail = format!(
        "{address}, serviceAccount {account}{}",
        spec.get("network")
            .and_then(Value::as_str)
            .map(|n| format!(", network {n}"))
            .unwrap_or_default()
    );
    let action = match &observed.entry {
        None => Action::Create,
        Some(current) if entry_matches(current, &object) => Action::Unchanged,
        Some(_) => Action::Update,
    };
    let mut change = Change::new(
        action,
        Kind::WorkloadEntry,
        Some(&want.namespace),
        &want.name,
    )
    .detail(detail);
    if action != Action::Unchanged {
        // At the version the object names: the one this cluster serves WorkloadEntry at.
        change = change
            .object(object.clone())
            .write(Write::apply(Kind::WorkloadEntry, object.clone()).owning(&ENTRY_OWNED));
    }
    planned.plan.push(change);
    if let Some(service) = &want.service {
        let labels = labels(want, observed.group.as_ref());
        let ports = ports(want, observed.group.as_ref());
        plan_service(&mut planned, want, observed, service, &labels, &ports)?;
    }
    Ok(planned)
}

/// Plan `register --deregister --workload-entry NAME`: delete the entry.
fn plan_delete(observed: &Observed, want: &Want) -> Planned {
    if observed.entry.is_none() {
        let missing = if observed.namespace_missing {
            format!("namespace {} does not exist", want.namespace)
        } else {
            format!(
                "workloadentry {}/{} does not exist",
                want.namespace, want.name
            )
        };
        return Planned {
            note: Some(format!(
                "nothing to change: {missing} (check the name and -n {})",
                want.namespace
            )),
            ..Planned::default()
        };
    }
    let mut planned = Planned::default();
    planned.plan.push(
        Change::new(
            Action::Delete,
            Kind::WorkloadEntry,
            Some(&want.namespace),
            &want.name,
        )
        .write(Write::delete(Resource::new(
            Kind::WorkloadEntry,
            &observed.version,
        ))),
    );
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Want {
        Want {
            namespace: "vm".into(),
            name: "vm-1".into(),
            address: Some("10.0.0.5".parse().unwrap()),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            service_account: None,
            network: None,
            ports: Vec::new(),
            service: None,
            workload_group: None,
            update_service: false,
            context: None,
        }
    }

    fn group() -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "WorkloadGroup",
            "metadata": {"name": "vm", "namespace": "vm"},
            "spec": {
                "metadata": {"labels": {"app": "vm"}},
                "template": {"serviceAccount": "vm-sa", "network": "vm-net",
                             "labels": {"version": "v1"}, "ports": {"http": 8080}}
            }
        }))
        .unwrap()
    }

    fn observed(group: Option<DynamicObject>) -> Observed {
        Observed {
            version: "v1".into(),
            group,
            service_account_exists: Some(true),
            ..Observed::default()
        }
    }

    #[test]
    fn entry_takes_the_group_template_and_flags_win() {
        let mut w = want();
        w.workload_group = Some("vm".into());
        w.labels.insert("version".into(), "v2".into());
        let planned = plan_entry(&observed(Some(group())), &w).unwrap();
        let object = planned.plan.changes[0].object.clone().unwrap();
        assert_eq!(
            object,
            json!({
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": "vm-1", "namespace": "vm", "labels": {"app": "vm", "version": "v2"}},
                "spec": {"address": "10.0.0.5", "labels": {"app": "vm", "version": "v2"},
                         "ports": {"http": 8080}, "serviceAccount": "vm-sa", "network": "vm-net"}
            })
        );
        let write = planned.plan.changes[0].write.as_ref().unwrap();
        assert_eq!(write.verb, crate::plan::write::Verb::Apply);
        assert_eq!(write.resource.api_version(), "networking.istio.io/v1");
        assert_eq!(write.owned.len(), ENTRY_OWNED.len());
    }

    #[test]
    fn unchanged_when_the_entry_holds_the_same_fields() {
        let w = want();
        let mut o = observed(None);
        let object = entry_object(&w, &o, w.address.unwrap());
        o.entry = Some(serde_json::from_value(object).unwrap());
        let planned = plan_entry(&o, &w).unwrap();
        assert!(planned.plan.is_noop());
        let mut moved = w.clone();
        moved.address = Some("10.0.0.6".parse().unwrap());
        assert_eq!(
            plan_entry(&o, &moved).unwrap().plan.changes[0].action,
            Action::Update
        );
    }

    #[test]
    fn missing_service_account_or_group_is_an_error() {
        let mut o = observed(None);
        o.service_account_exists = Some(false);
        let err = plan_entry(&o, &want()).unwrap_err();
        assert!(
            err.to_string().contains("serviceaccount vm/default"),
            "{err}"
        );
        assert!(
            crate::errors::Diagnose::hint(&err)
                .unwrap()
                .contains("`kubectl meshvm prepare -n vm -s default`"),
            "{err:?}"
        );
        let mut w = want();
        w.workload_group = Some("vm".into());
        let err = plan_entry(&observed(None), &w).unwrap_err();
        assert!(err.to_string().contains("workloadgroup vm/vm"), "{err}");
    }

    #[test]
    fn service_is_created_selecting_the_entry_or_checked() {
        let mut w = want();
        w.workload_group = Some("vm".into());
        w.service = Some("vm".into());
        let mut o = observed(Some(group()));
        let planned = plan_entry(&o, &w).unwrap();
        let svc = planned.plan.changes[1].object.clone().unwrap();
        assert_eq!(
            svc["spec"]["selector"],
            json!({"app": "vm", "version": "v1"})
        );
        assert_eq!(svc["spec"]["ports"][0]["name"], "http");
        assert_eq!(svc["spec"]["ports"][0]["port"], 8080);

        o.service = Some(
            serde_json::from_value(json!({"metadata": {"name": "vm", "namespace": "vm"},
                "spec": {"selector": {"app": "other"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
            .unwrap(),
        );
        let planned = plan_entry(&o, &w).unwrap();
        assert_eq!(planned.plan.changes[1].action, Action::Unchanged);
        assert!(
            planned.warnings[0].contains("would not select"),
            "{:?}",
            planned.warnings
        );

        w.ports = vec![NamedPort {
            name: "grpc".into(),
            port: 9090,
        }];
        assert!(matches!(
            plan_entry(&o, &w).unwrap_err(),
            Error::ServiceDiffers { .. }
        ));
        w.update_service = true;
        let planned = plan_entry(&o, &w).unwrap();
        assert_eq!(
            planned.plan.changes[1].write.as_ref().unwrap().verb,
            crate::plan::write::Verb::Replace
        );
    }

    #[test]
    fn service_needs_labels_to_select() {
        let mut w = want();
        w.service = Some("vm".into());
        assert!(matches!(
            plan_entry(&observed(None), &w).unwrap_err(),
            Error::NoLabelsToSelect { .. }
        ));
    }

    #[test]
    fn selection() {
        let labels: BTreeMap<String, String> =
            [("app".into(), "vm".into()), ("v".into(), "1".into())].into();
        assert!(selects(&[("app".into(), "vm".into())].into(), &labels));
        assert!(!selects(&[("app".into(), "x".into())].into(), &labels));
        assert!(
            !selects(&BTreeMap::new(), &labels),
            "an empty selector selects nothing here"
        );
    }

    #[test]
    fn deregister_deletes_an_existing_entry() {
        let mut w = want();
        w.address = None;
        // A second run: nothing to change, naming what is missing.
        let again = plan_entry(&observed(None), &w).unwrap();
        assert!(again.plan.changes.is_empty());
        assert_eq!(
            again.note.as_deref(),
            Some(
                "nothing to change: workloadentry vm/vm-1 does not exist (check the name and -n vm)"
            )
        );
        let mut o = observed(None);
        o.entry = Some(
            serde_json::from_value(entry_object(&want(), &o, "10.0.0.5".parse().unwrap())).unwrap(),
        );
        let planned = plan_entry(&o, &w).unwrap();
        assert_eq!(planned.plan.changes[0].action, Action::Delete);
    }
}
