//! `register --prune -n NS`: delete what meshvm can prove is stale, and nothing else.
//!
//! Three findings, each proven from what the cluster itself says:
//! - WorkloadEntries with the same address, network and ServiceAccount: every one created
//!   strictly before the newest of its group goes (entries created in the same second as the
//!   newest cannot be ordered, and stay, with a warning). Entries with different ServiceAccounts
//!   at one address are different workloads on one VM and are not duplicates.
//! - Auto-registered WorkloadEntries — annotation `istio.io/autoRegistrationGroup`, which istiod
//!   sets on the entries it makes (istio/istio@1.22.0 pilot/pkg/autoregistration/controller.go:697,
//!   read back at :733) — whose `Healthy` condition (pilot/pkg/model/status/workloadentry.go:25,
//!   written by pilot/pkg/autoregistration/internal/health/controller.go:82-95 with status
//!   `True`/`False` and `lastTransitionTime`) has been `False` for longer than `--stale-after`.
//!   An entry without that condition, or healthy, is never stale here.
//! - Addresses listed twice in one Endpoints object of a selector-less Service (twice in one
//!   subset, or in two subsets with the same ports): the later copies go. Endpoints of a Service
//!   with a selector belong to the endpoints controller and are not touched.
//!
//! Every delete and update is guarded by the `resourceVersion` read: an entry that changed since
//! (became healthy, was re-registered) is not deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::Planned;
use crate::plan::write::{Kind, Precondition, Resource, Write};
use crate::plan::{Action, Change};

/// The annotation istiod puts on auto-registered WorkloadEntries (istio/api@1.22.0
/// annotation `IoIstioAutoRegistrationGroup`, used at istio/istio@1.22.0
/// pilot/pkg/autoregistration/controller.go:697).
pub const AUTO_REGISTRATION_GROUP: &str = "istio.io/autoRegistrationGroup";

/// The health condition's type (istio/istio@1.22.0 pilot/pkg/model/status/workloadentry.go:25).
pub const CONDITION_HEALTHY: &str = "Healthy";

/// What the namespace holds.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// WorkloadEntries, each with `apiVersion` (empty when the cluster serves none).
    pub entries: Vec<Value>,
    /// Services.
    pub services: Vec<Service>,
    /// Endpoints.
    pub endpoints: Vec<Endpoints>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn name(v: &Value) -> &str {
    text(v, "/metadata/name").unwrap_or_default()
}

fn created(v: &Value) -> Option<Timestamp> {
    text(v, "/metadata/creationTimestamp")?.parse().ok()
}

fn precondition(v: &Value) -> Precondition {
    text(v, "/metadata/resourceVersion").map_or(Precondition::None, |rv| {
        Precondition::ResourceVersion(rv.to_owned())
    })
}

/// `1h5m`, `42m`, `30s`: how long, for the DETAIL column.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{sec}s"),
        (0, _) => format!("{m}m"),
        _ if m == 0 => format!("{h}h"),
        _ => format!("{h}h{m}m"),
    }
}

fn delete_row(entry: &Value, namespace: &str, detail: String) -> Change {
    Change::new(
        Action::Delete,
        Kind::WorkloadEntry,
        Some(namespace),
        name(entry),
    )
    .detail(detail)
    .object(entry.clone())
    .write(
        Write::delete(Resource::of(Kind::WorkloadEntry, entry)).precondition(precondition(entry)),
    )
}

/// The address as a key: an IP in its canonical form (IPv6 may be written several ways).
fn address_key(address: &str) -> String {
    address
        .parse::<IpAddr>()
        .map_or_else(|_| address.to_owned(), |ip| ip.to_string())
}

/// How long an auto-registered entry has been unhealthy, when it is (`None`: not auto-registered,
/// no `Healthy` condition, healthy, or no readable transition time).
pub fn unhealthy_for(entry: &Value, now: Timestamp) -> Option<(String, Duration)> {
    let group = entry
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTO_REGISTRATION_GROUP))
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())?;
    let condition = entry
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(CONDITION_HEALTHY))?;
    if condition.get("status").and_then(Value::as_str) != Some("False") {
        return None;
    }
    let since: Timestamp = condition
        .get("lastTransitionTime")
        .and_then(Value::as_str)?
        .parse()
        .ok()?;
    let seconds = now.as_second() - since.as_second();
    let seconds = u64::try_from(seconds).ok()?;
    Some((group.to_owned(), Duration::from_secs(seconds)))
}

/// Plan the prune of `namespace` at `now`.
pub fn plan(
    observed: &Observed,
    namespace: &str,
    now: Timestamp,
    stale_after: Duration,
) -> Planned {
    let mut planned = Planned::default();
    let mut doomed: BTreeSet<String> = BTreeSet::new();

    // Duplicates: same address, network and ServiceAccount.
    let mut groups: BTreeMap<(String, String, String), Vec<&Value>> = BTreeMap::new();
    for entry in &observed.entries {
        let Some(address) = text(entry, "/spec/address").filter(|a| !a.is_empty()) else {
            continue;
        };
        if address.starts_with("unix://") {
            continue;
        }
        let network = text(entry, "/spec/network").unwrap_or_default().to_owned();
        let account = text(entry, "/spec/serviceAccount")
            .unwrap_or_default()
            .to_owned();
        groups
            .entry((address_key(address), network, account))
            .or_default()
            .push(entry);
    }
    for ((address, network, _), members) in &groups {
        if members.len() < 2 {
            continue;
        }
        let network_text = if network.is_empty() {
            "the default network".to_owned()
        } else {
            format!("network {network}")
        };
        let Some(times) = members
            .iter()
            .map(|e| created(e))
            .collect::<Option<Vec<_>>>()
        else {
            planned.warnings.push(format!(
                "workloadentries {} share address {address} on {network_text}, but not all say when they were created: left as they are",
                members.iter().map(|e| name(e)).collect::<Vec<_>>().join(", ")
            ));
            continue;
        };
        let newest = *times.iter().max().expect("two or more");
        let kept: Vec<&str> = members
            .iter()
            .zip(&times)
            .filter(|(_, t)| **t == newest)
            .map(|(e, _)| name(e))
            .collect();
        if kept.len() > 1 {
            planned.warnings.push(format!(
                "workloadentries {} share address {address} on {network_text} and were created in the same second ({newest}): which is newer cannot be told, so they are left as they are",
                kept.join(", ")
            ));
        }
        for (entry, t) in members.iter().zip(&times) {
            if *t < newest {
                doomed.insert(name(entry).to_owned());
                planned.plan.push(delete_row(
                    entry,
                    namespace,
                    format!(
                        "duplicate of {} (address {address}, {network_text}), created {t}",
                        kept.join(",")
                    ),
                ));
            }
        }
    }

    // Auto-registered entries unhealthy for longer than --stale-after.
    for entry in &observed.entries {
        if doomed.contains(name(entry)) {
            continue;
        }
        if let Some((group, for_how_long)) = unhealthy_for(entry, now)
            && for_how_long > stale_after
        {
            doomed.insert(name(entry).to_owned());
            planned.plan.push(delete_row(
                entry,
                namespace,
                format!(
                    "auto-registered (group {group}), unhealthy for {} (--stale-after {})",
                    human(for_how_long),
                    human(stale_after)
                ),
            ));
        }
    }

    // Endpoints addresses listed twice, in selector-less Services only.
    for endpoints in &observed.endpoints {
        let ep_name = endpoints.metadata.name.as_deref().unwrap_or_default();
        let selectorless = observed.services.iter().any(|s| {
            s.metadata.name.as_deref() == Some(ep_name)
                && s.spec
                    .as_ref()
                    .and_then(|spec| spec.selector.as_ref())
                    .is_none_or(BTreeMap::is_empty)
        });
        if !selectorless {
            continue;
        }
        if let Some((fixed, removed)) = without_repeats(endpoints) {
            let mut object = serde_json::to_value(&fixed).unwrap_or_default();
            object["apiVersion"] = "v1".into();
            object["kind"] = "Endpoints".into();
            planned.plan.push(
                Change::new(Action::Update, Kind::Endpoints, Some(namespace), ep_name)
                    .detail(format!("removed repeated {}", removed.join(", ")))
                    .object(object.clone())
                    .write(Write::replace(Kind::Endpoints, object)),
            );
        }
    }
    if planned.plan.changes.is_empty() {
        planned.note = Some(format!(
            "nothing to prune in namespace {namespace}: no duplicate workloadentries, none auto-registered and unhealthy for longer than {}, no endpoints address listed twice",
            human(stale_after)
        ));
    }
    planned
}

/// The Endpoints with every address listed a second time for the same ports removed (ready
/// copies win over not-ready ones, earlier subsets over later), and the repeated addresses;
/// `None` when nothing repeats.
pub fn without_repeats(endpoints: &Endpoints) -> Option<(Endpoints, Vec<String>)> {
    let mut fixed = endpoints.clone();
    let subsets = fixed.subsets.as_mut()?;
    let mut seen: BTreeSet<(Vec<(i32, String)>, String)> = BTreeSet::new();
    let mut removed: Vec<String> = Vec::new();
    let port_key = |s: &k8s_openapi::api::core::v1::EndpointSubset| {
        let mut k: Vec<(i32, String)> = s
            .ports
            .iter()
            .flatten()
            .map(|p| (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
            .collect();
        k.sort();
        k
    };
    let mut keep = |list: &mut Option<Vec<EndpointAddress>>, ports: &Vec<(i32, String)>| {
        if let Some(l) = list.as_mut() {
            l.retain(|a| {
                let first = seen.insert((ports.clone(), address_key(&a.ip)));
                if !first {
                    removed.push(a.ip.clone());
                }
                first
            });
            if l.is_empty() {
                *list = None;
            }
        }
    };
    let keys: Vec<_> = subsets.iter().map(port_key).collect();
    for (s, k) in subsets.iter_mut().zip(&keys) {
        keep(&mut s.addresses, k);
    }
    for (s, k) in subsets.iter_mut().zip(&keys) {
        keep(&mut s.not_ready_addresses, k);
    }
    if removed.is_empty() {
        return None;
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    removed.sort();
    removed.dedup();
    Some((fixed, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn entry(name: &str, address: &str, created: &str) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
               "metadata": {"name": name, "namespace": "vm", "resourceVersion": "5",
                            "creationTimestamp": created},
               "spec": {"address": address, "network": "vm-net", "serviceAccount": "vm-sa"}})
    }

    fn rows(p: &Planned) -> Vec<(&str, Action)> {
        p.plan
            .changes
            .iter()
            .map(|c| (c.name.as_str(), c.action))
            .collect()
    }

    #[test]
    fn the_older_duplicate_goes_the_newest_stays() {
        let o = Observed {
            entries: vec![
                entry("old", "10.0.0.5", "2026-01-01T10:00:00Z"),
                entry("new", "10.0.0.5", "2026-01-01T11:00:00Z"),
                entry("alone", "10.0.0.6", "2026-01-01T09:00:00Z"),
            ],
            ..Observed::default()
        };
        let p = plan(&o, "vm", now(), Duration::from_secs(3600));
        assert_eq!(rows(&p), [("old", Action::Delete)]);
        let w = p.plan.changes[0].write.as_ref().unwrap();
        assert_eq!(w.precondition, Precondition::ResourceVersion("5".into()));
        assert_eq!(w.resource.api_version(), "networking.istio.io/v1");
        assert!(p.plan.changes[0].detail.contains("duplicate of new"));
    }

    #[test]
    fn what_cannot_be_proven_stays() {
        let mut other_net = entry("b", "10.0.0.5", "2026-01-01T11:00:00Z");
        other_net["spec"]["network"] = "other".into();
        let mut other_sa = entry("c", "10.0.0.5", "2026-01-01T11:00:00Z");
        other_sa["spec"]["serviceAccount"] = "db".into();
        let o = Observed {
            entries: vec![
                entry("a", "10.0.0.5", "2026-01-01T10:00:00Z"),
                other_net,
                other_sa,
                entry("t1", "10.0.0.7", "2026-01-01T10:00:00Z"),
                entry("t2", "10.0.0.7", "2026-01-01T10:00:00Z"),
            ],
            ..Observed::default()
        };
        let p = plan(&o, "vm", now(), Duration::from_secs(3600));
        assert!(p.plan.changes.is_empty(), "{:?}", rows(&p));
        assert!(p.warnings[0].contains("same second"), "{:?}", p.warnings);
        assert!(p.note.unwrap().starts_with("nothing to prune"));
    }

    #[test]
    fn unhealthy_auto_registered_entries_past_the_limit_go() {
        let auto = |name: &str, status: &str, since: &str| {
            let mut e = entry(
                name,
                &format!("10.1.0.{}", name.len()),
                "2026-01-01T00:00:00Z",
            );
            e["metadata"]["annotations"] = json!({AUTO_REGISTRATION_GROUP: "vm"});
            e["status"] = json!({"conditions": [{"type": "Healthy", "status": status,
                                                 "lastTransitionTime": since}]});
            e
        };
        let mut manual = auto("manual", "False", "2026-01-01T00:00:00Z");
        manual["metadata"]["annotations"] = json!({});
        let o = Observed {
            entries: vec![
                auto("s", "False", "2026-01-01T10:00:00Z"),
                auto("fresh", "False", "2026-01-01T11:30:00Z"),
                auto("ok", "True", "2026-01-01T00:00:00Z"),
                manual,
            ],
            ..Observed::default()
        };
        let p = plan(&o, "vm", now(), Duration::from_secs(3600));
        assert_eq!(rows(&p), [("s", Action::Delete)]);
        assert!(
            p.plan.changes[0].detail.contains("unhealthy for 2h"),
            "{}",
            p.plan.changes[0].detail
        );
        let p = plan(&o, "vm", now(), Duration::from_secs(10 * 60));
        assert_eq!(rows(&p), [("s", Action::Delete), ("fresh", Action::Delete)]);
    }

    #[test]
    fn repeated_endpoints_addresses_of_selectorless_services() {
        let eps: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "vm", "namespace": "vm", "resourceVersion": "3"},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.1"}], "ports": [{"port": 80}]},
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 443}]},
                {"notReadyAddresses": [{"ip": "10.0.0.2"}], "ports": [{"port": 80}]}
            ]
        }))
        .unwrap();
        let (fixed, removed) = without_repeats(&eps).unwrap();
        assert_eq!(removed, ["10.0.0.1", "10.0.0.2"]);
        let ips: Vec<Vec<String>> = fixed
            .subsets
            .unwrap()
            .iter()
            .map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()).collect())
            .collect();
        assert_eq!(ips, [vec!["10.0.0.1"], vec!["10.0.0.2"], vec!["10.0.0.1"]]);
        let selectorless: Service =
            serde_json::from_value(json!({"metadata": {"name": "vm"}, "spec": {}})).unwrap();
        let selected: Service = serde_json::from_value(
            json!({"metadata": {"name": "vm"}, "spec": {"selector": {"app": "x"}}}),
        )
        .unwrap();
        let mut o = Observed {
            services: vec![selectorless],
            endpoints: vec![eps],
            ..Observed::default()
        };
        let p = plan(&o, "vm", now(), Duration::from_secs(3600));
        assert_eq!(rows(&p), [("vm", Action::Update)]);
        assert_eq!(
            p.plan.changes[0].write.as_ref().unwrap().precondition,
            Precondition::ResourceVersion("3".into())
        );
        o.services = vec![selected];
        assert!(
            plan(&o, "vm", now(), Duration::from_secs(3600))
                .plan
                .changes
                .is_empty()
        );
        assert_eq!(human(Duration::from_secs(3900)), "1h5m");
    }
}
