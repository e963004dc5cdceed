//! Legacy registration: a selector-less Service plus the VM's address in its Endpoints, as
//! `istioctl register` 1.4 wrote them — without duplicates, and only changing a Service on request.
//!
//! Everything here is pure: it takes what was observed and returns the rows, each with its write.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Error, Planned};
use crate::istio::SERVICE_ACCOUNTS_ANNOTATION;
use crate::names::NamedPort;
use crate::plan::write::{Kind, Write};
use crate::plan::{Action, Change};

/// What a legacy registration wants, resolved from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Namespace of the Service.
    pub namespace: String,
    /// The Service (and Endpoints) name.
    pub service: String,
    /// The VM's address.
    pub ip: IpAddr,
    /// The requested ports, in the order given.
    pub ports: Vec<NamedPort>,
    /// Labels for a new Service and Endpoints.
    pub labels: BTreeMap<String, String>,
    /// Annotations for a new Service and Endpoints (without the ServiceAccount one).
    pub annotations: BTreeMap<String, String>,
    /// The ServiceAccount the VM runs as ([`crate::scope::service_account`]'s rule).
    pub service_account: String,
    /// Whether `-s` named it (else the rule settled it).
    pub account_from_flag: bool,
    /// Whether an existing Service may be changed.
    pub update_service: bool,
    /// `--context`, carried into the commands hints print.
    pub context: Option<String>,
}

impl Want {
    /// The annotations istioctl put on what it created: the user's, then the ServiceAccount's.
    pub fn all_annotations(&self) -> BTreeMap<String, String> {
        let mut all = self.annotations.clone();
        all.insert(
            SERVICE_ACCOUNTS_ANNOTATION.to_owned(),
            self.service_account.clone(),
        );
        all
    }

    fn port_list(&self) -> String {
        self.ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the cluster holds for a legacy registration.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The Service, if it exists.
    pub service: Option<Service>,
    /// Its Endpoints, if they exist.
    pub endpoints: Option<Endpoints>,
    /// Whether the VM's ServiceAccount exists (`None`: not looked up).
    pub service_account_exists: Option<bool>,
    /// The namespace does not exist.
    pub namespace_missing: bool,
}

fn meta(namespace: &str, name: &str, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: (!labels.is_empty()).then(|| labels.clone()),
        ..ObjectMeta::default()
    }
}

/// A Service port as the API server stores what istioctl sent (`{name, port}`, defaulted to
/// TCP and `targetPort: port`); sent in full so every server stores the same object.
pub fn service_port(p: &NamedPort) -> ServicePort {
    ServicePort {
        name: Some(p.name.clone()),
        port: i32::from(p.port),
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::Int(i32::from(p.port))),
        ..ServicePort::default()
    }
}

fn endpoint_port(p: &NamedPort) -> EndpointPort {
    EndpointPort {
        name: Some(p.name.clone()),
        port: i32::from(p.port),
        protocol: Some("TCP".into()),
        ..EndpointPort::default()
    }
}

/// The selector-less Service istioctl 1.4 created: ports, labels, annotations.
pub fn new_service(want: &Want) -> Service {
    let mut metadata = meta(&want.namespace, &want.service, &want.labels);
    metadata.annotations = Some(want.all_annotations());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            ports: Some(want.ports.iter().map(service_port).collect()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A new subset holding only `ip` on `ports`.
pub fn new_subset(ip: IpAddr, ports: &[NamedPort]) -> EndpointSubset {
    EndpointSubset {
        addresses: Some(vec![EndpointAddress {
            ip: ip.to_string(),
            ..EndpointAddress::default()
        }]),
        not_ready_addresses: None,
        ports: Some(ports.iter().map(endpoint_port).collect()),
    }
}

/// The Endpoints istioctl 1.4 created (same labels and annotations as the Service) with `ip`.
pub fn new_endpoints(want: &Want) -> Endpoints {
    let mut metadata = meta(&want.namespace, &want.service, &want.labels);
    metadata.annotations = Some(want.all_annotations());
    Endpoints {
        metadata,
        subsets: Some(vec![new_subset(want.ip, &want.ports)]),
    }
}

/// Whether two address texts are the same IP (IPv6 may be written in several ways).
fn same_ip(text: &str, ip: IpAddr) -> bool {
    text.parse::<IpAddr>()
        .map_or(text == ip.to_string(), |a| a == ip)
}

fn has_ip(list: Option<&Vec<EndpointAddress>>, ip: IpAddr) -> bool {
    list.is_some_and(|l| l.iter().any(|a| same_ip(&a.ip, ip)))
}

/// Whether a subset's port numbers are exactly `wanted` (istioctl's `samePorts`: numbers only).
pub fn same_port_set(subset: &EndpointSubset, wanted: &BTreeSet<u16>) -> bool {
    let ports = subset.ports.as_deref().unwrap_or_default();
    ports.len() == wanted.len()
        && ports
            .iter()
            .all(|p| u16::try_from(p.port).is_ok_and(|n| wanted.contains(&n)))
}

/// How adding an address to Endpoints subsets turned out.
#[derive(Debug, Clone, PartialEq)]
pub enum AddOutcome {
    /// The address is already ready in a subset with exactly these ports.
    Present,
    /// The subsets with the address added.
    Added {
        /// The new subsets.
        subsets: Vec<EndpointSubset>,
        /// What was done, for the DETAIL column.
        detail: String,
    },
}

/// Add `ip` to the subset whose port numbers equal the requested ones (else a new subset),
/// never twice. An address listed as not ready there is moved to the ready addresses.
pub fn add_address(subsets: &[EndpointSubset], ip: IpAddr, ports: &[NamedPort]) -> AddOutcome {
    let wanted: BTreeSet<u16> = ports.iter().map(|p| p.port).collect();
    let matching: Vec<usize> = subsets
        .iter()
        .enumerate()
        .filter(|(_, s)| same_port_set(s, &wanted))
        .map(|(i, _)| i)
        .collect();
    if matching
        .iter()
        .any(|&i| has_ip(subsets[i].addresses.as_ref(), ip))
    {
        return AddOutcome::Present;
    }
    let mut subsets = subsets.to_vec();
    let ports_text = ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let Some(&first) = matching.first() else {
        subsets.push(new_subset(ip, ports));
        return AddOutcome::Added {
            subsets,
            detail: format!("added {ip} in a new subset ({ports_text})"),
        };
    };
    let subset = &mut subsets[first];
    let mut detail = format!("added {ip} ({ports_text})");
    if let Some(not_ready) = subset.not_ready_addresses.as_mut()
        && not_ready.iter().any(|a| same_ip(&a.ip, ip))
    {
        not_ready.retain(|a| !same_ip(&a.ip, ip));
        if not_ready.is_empty() {
            subset.not_ready_addresses = None;
        }
        detail = format!("moved {ip} from not ready to ready ({ports_text})");
    }
    subset
        .addresses
        .get_or_insert_with(Vec::new)
        .push(EndpointAddress {
            ip: ip.to_string(),
            ..EndpointAddress::default()
        });
    AddOutcome::Added { subsets, detail }
}

/// Remove `ip` from every subset (ready or not) and drop subsets left without addresses.
/// `None` when the address is in no subset.
pub fn remove_address(subsets: &[EndpointSubset], ip: IpAddr) -> Option<Vec<EndpointSubset>> {
    let mut removed = 0;
    let mut kept = Vec::new();
    for subset in subsets {
        let mut subset = subset.clone();
        for list in [&mut subset.addresses, &mut subset.not_ready_addresses] {
            if let Some(l) = list.as_mut() {
                let before = l.len();
                l.retain(|a| !same_ip(&a.ip, ip));
                removed += before - l.len();
                if l.is_empty() {
                    *list = None;
                }
            }
        }
        if subset.addresses.is_some() || subset.not_ready_addresses.is_some() {
            kept.push(subset);
        }
    }
    (removed > 0).then_some(kept)
}

/// Every address of the Endpoints, for messages.
pub fn addresses(endpoints: &Endpoints) -> Vec<String> {
    let mut all: Vec<String> = endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| {
            s.addresses
                .iter()
                .flatten()
                .chain(s.not_ready_addresses.iter().flatten())
        })
        .map(|a| a.ip.clone())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// How an existing Service differs from what the registration needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceDiff {
    /// Differences that break the registration (missing or misnamed ports).
    pub hard: Vec<String>,
    /// Differences worth fixing (labels, annotations, the ServiceAccount list).
    pub soft: Vec<String>,
    /// The Service with every difference fixed.
    pub fixed: Option<Service>,
}

/// The ServiceAccounts listed in the annotation (comma-separated, as Istio 1.4 reads it).
fn listed_accounts(service: &Service) -> Vec<String> {
    service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SERVICE_ACCOUNTS_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a Service port carries TCP (no protocol means TCP).
fn is_tcp(p: &ServicePort) -> bool {
    p.protocol.as_deref().is_none_or(|x| x == "TCP")
}

/// Compare an existing Service with the requested ports (matched by number), labels,
/// annotations and ServiceAccount, and build the Service with all of them fixed.
pub fn diff_service(current: &Service, want: &Want) -> ServiceDiff {
    let mut diff = ServiceDiff::default();
    let mut fixed = current.clone();
    let spec = fixed.spec.get_or_insert_with(ServiceSpec::default);
    let ports = spec.ports.get_or_insert_with(Vec::new);
    for p in &want.ports {
        match ports
            .iter_mut()
            .find(|s| s.port == i32::from(p.port) && is_tcp(s))
        {
            None => {
                diff.hard
                    .push(format!("port {} ({}) is missing", p.port, p.name));
                ports.push(service_port(p));
            }
            Some(s) if s.name.as_deref().unwrap_or_default() != p.name => {
                diff.hard.push(format!(
                    "port {} is named {:?}, not {:?}",
                    p.port,
                    s.name.as_deref().unwrap_or_default(),
                    p.name
                ));
                s.name = Some(p.name.clone());
            }
            Some(_) => {}
        }
    }
    let labels = fixed.metadata.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in &want.labels {
        if labels.get(k) != Some(v) {
            diff.soft.push(format!("label {k}={v} is not set"));
            labels.insert(k.clone(), v.clone());
        }
    }
    let accounts = listed_accounts(current);
    let annotations = fixed.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in &want.annotations {
        if k != SERVICE_ACCOUNTS_ANNOTATION && annotations.get(k) != Some(v) {
            diff.soft.push(format!("annotation {k}={v} is not set"));
            annotations.insert(k.clone(), v.clone());
        }
    }
    if !accounts.contains(&want.service_account) {
        diff.soft.push(format!(
            "annotation {SERVICE_ACCOUNTS_ANNOTATION} does not list {}",
            want.service_account
        ));
        let mut list = accounts;
        list.push(want.service_account.clone());
        annotations.insert(SERVICE_ACCOUNTS_ANNOTATION.to_owned(), list.join(","));
    }
    if fixed
        .metadata
        .labels
        .as_ref()
        .is_some_and(BTreeMap::is_empty)
    {
        fixed.metadata.labels = None;
    }
    if !(diff.hard.is_empty() && diff.soft.is_empty()) {
        diff.fixed = Some(fixed);
    }
    diff
}

fn selector_text(service: &Service) -> Option<String> {
    let selector = service.spec.as_ref()?.selector.as_ref()?;
    (!selector.is_empty()).then(|| {
        selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn to_value<T: serde::Serialize>(kind: &str, object: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        // k8s-openapi's Serialize adds these for its types; set them anyway so the -o output and
        // the request body always say what they are.
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), kind.into());
    }
    v
}

/// The refusal to register where prepare has not run: the namespace or the VM's ServiceAccount
/// is missing (checked before any write).
pub fn not_prepared(
    namespace_missing: bool,
    namespace: &str,
    account: &str,
    workload_group: Option<&str>,
    context: Option<&str>,
) -> Error {
    let fix = crate::scope::prepare_command(namespace, account, workload_group, context);
    if namespace_missing {
        Error::NamespaceMissing {
            namespace: namespace.to_owned(),
            fix,
        }
    } else {
        Error::NotPrepared {
            namespace: namespace.to_owned(),
            account: account.to_owned(),
            fix,
        }
    }
}

/// The warning for an existing Service whose ServiceAccount annotation does not list the VM's:
/// the identity differs. `--update-service` would add the VM's account beside the listed ones
/// (widening who may serve it), so the advice is `-s` with the listed account, unless `-s` chose
/// this account on purpose.
fn identity_warning(want: &Want, listed: &[String]) -> String {
    let svc = format!("{}/{}", want.namespace, want.service);
    let have = listed.join(",");
    if want.account_from_flag || listed.is_empty() {
        let widened = listed
            .iter()
            .cloned()
            .chain(std::iter::once(want.service_account.clone()))
            .collect::<Vec<_>>()
            .join(",");
        return format!(
            "service {svc} lists ServiceAccount(s) {} in {SERVICE_ACCOUNTS_ANNOTATION}, not {}: the VM's certificate will not match; run again with --update-service to list it ({widened})",
            if have.is_empty() {
                "none"
            } else {
                have.as_str()
            },
            want.service_account
        );
    }
    format!(
        "service {svc} runs as ServiceAccount {have} ({SERVICE_ACCOUNTS_ANNOTATION}), but the VM was registered as {}: register it with -s {} to keep the service's identity (--update-service would widen it to {have},{})",
        want.service_account, listed[0], want.service_account
    )
}

/// Plan `register SERVICE IP PORT…`: the Service row, then the Endpoints row.
pub fn plan_register(observed: &Observed, want: &Want) -> Result<Planned, Error> {
    if observed.namespace_missing || observed.service_account_exists == Some(false) {
        return Err(not_prepared(
            observed.namespace_missing,
            &want.namespace,
            &want.service_account,
            None,
            want.context.as_deref(),
        ));
    }
    let mut planned = Planned::default();
    match &observed.service {
        None => {
            let svc = new_service(want);
            let object = to_value("Service", &svc);
            planned.plan.push(
                Change::new(
                    Action::Create,
                    Kind::Service,
                    Some(&want.namespace),
                    &want.service,
                )
                .detail(format!("selector-less, ports {}", want.port_list()))
                .object(object.clone())
                .write(Write::create(Kind::Service, object)),
            );
        }
        Some(current) => {
            if let Some(selector) = selector_text(current) {
                return Err(Error::ServiceHasSelector {
                    namespace: want.namespace.clone(),
                    name: want.service.clone(),
                    selector,
                    ip: want.ip,
                });
            }
            let diff = diff_service(current, want);
            let all: Vec<String> = diff.hard.iter().chain(&diff.soft).cloned().collect();
            match diff.fixed {
                Some(fixed) if want.update_service => {
                    let object = to_value("Service", &fixed);
                    planned.plan.push(
                        Change::new(
                            Action::Update,
                            Kind::Service,
                            Some(&want.namespace),
                            &want.service,
                        )
                        .detail(all.join("; "))
                        .object(object.clone())
                        .write(Write::replace(Kind::Service, object)),
                    );
                }
                Some(_) if !diff.hard.is_empty() => {
                    let listed = listed_accounts(current);
                    return Err(Error::ServiceDiffers {
                        namespace: want.namespace.clone(),
                        name: want.service.clone(),
                        differences: all.join("; "),
                        keep_identity: (!want.account_from_flag
                            && !listed.is_empty()
                            && !listed.contains(&want.service_account))
                        .then(|| (listed[0].clone(), want.service_account.clone())),
                    });
                }
                Some(_) => {
                    let listed = listed_accounts(current);
                    let others: Vec<String> = diff
                        .soft
                        .iter()
                        .filter(|d| !d.contains(SERVICE_ACCOUNTS_ANNOTATION))
                        .cloned()
                        .collect();
                    if !listed.contains(&want.service_account) {
                        planned.warnings.push(identity_warning(want, &listed));
                    }
                    if !others.is_empty() {
                        planned.warnings.push(format!(
                            "service {}/{}: {} (run again with --update-service to fix it)",
                            want.namespace,
                            want.service,
                            others.join("; ")
                        ));
                    }
                    planned.plan.push(
                        Change::new(
                            Action::Unchanged,
                            Kind::Service,
                            Some(&want.namespace),
                            &want.service,
                        )
                        .detail("serves the ports"),
                    );
                }
                None => planned.plan.push(
                    Change::new(
                        Action::Unchanged,
                        Kind::Service,
                        Some(&want.namespace),
                        &want.service,
                    )
                    .detail("serves the ports"),
                ),
            }
        }
    }
    match &observed.endpoints {
        None => {
            let object = to_value("Endpoints", &new_endpoints(want));
            planned.plan.push(
                Change::new(
                    Action::Create,
                    Kind::Endpoints,
                    Some(&want.namespace),
                    &want.service,
                )
                .detail(format!("added {} ({})", want.ip, want.port_list()))
                .object(object.clone())
                .write(Write::create(Kind::Endpoints, object)),
            );
        }
        Some(current) => match add_address(
            current.subsets.as_deref().unwrap_or_default(),
            want.ip,
            &want.ports,
        ) {
            AddOutcome::Present => planned.plan.push(
                Change::new(
                    Action::Unchanged,
                    Kind::Endpoints,
                    Some(&want.namespace),
                    &want.service,
                )
                .detail(format!("already has {} ({})", want.ip, want.port_list())),
            ),
            AddOutcome::Added { subsets, detail } => {
                let mut updated = current.clone();
                updated.subsets = Some(subsets);
                let object = to_value("Endpoints", &updated);
                planned.plan.push(
                    Change::new(
                        Action::Update,
                        Kind::Endpoints,
                        Some(&want.namespace),
                        &want.service,
                    )
                    .detail(detail)
                    .object(object.clone())
                    .write(Write::replace(Kind::Endpoints, object)),
                );
            }
        },
    }
    Ok(planned)
}

/// `N address(es) left`, with the right number.
pub fn addresses_left(n: usize) -> String {
    if n == 1 {
        "1 address left".into()
    } else {
        format!("{n} addresses left")
    }
}

/// Plan `register --deregister SERVICE IP`: only the Endpoints change; the Service stays. An
/// address that is not there is nothing to change (a second run succeeds), and the note names
/// what is missing: the namespace, the Service, its Endpoints, or the address in them.
pub fn plan_deregister(observed: &Observed, want: &Want) -> Result<Planned, Error> {
    let svc = format!("{}/{}", want.namespace, want.service);
    let nothing = |why: String| Planned {
        note: Some(format!(
            "nothing to change: {why} (check the address and -n {})",
            want.namespace
        )),
        ..Planned::default()
    };
    if observed.namespace_missing {
        return Ok(nothing(format!(
            "namespace {} does not exist",
            want.namespace
        )));
    }
    let Some(current) = &observed.endpoints else {
        return Ok(nothing(if observed.service.is_some() {
            format!(
                "service {svc} has no endpoints object, so {} is not among them",
                want.ip
            )
        } else {
            format!(
                "service {svc} does not exist, so {} is not registered in it",
                want.ip
            )
        }));
    };
    let Some(subsets) = remove_address(current.subsets.as_deref().unwrap_or_default(), want.ip)
    else {
        let known = addresses(current);
        return Ok(nothing(format!(
            "{} is not an endpoint of service {svc} ({})",
            want.ip,
            if known.is_empty() {
                "it has no endpoints".to_owned()
            } else {
                format!("its addresses: {}", known.join(", "))
            }
        )));
    };
    let mut updated = current.clone();
    let left = subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum::<usize>();
    updated.subsets = (!subsets.is_empty()).then_some(subsets);
    let object = to_value("Endpoints", &updated);
    let mut planned = Planned::default();
    planned.plan.push(
        Change::new(
            Action::Update,
            Kind::Endpoints,
            Some(&want.namespace),
            &want.service,
        )
        .detail(format!("removed {} ({})", want.ip, addresses_left(left)))
        .object(object.clone())
        .write(Write::replace(Kind::Endpoints, object)),
    );
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn want(ports: &[(&str, u16)]) -> Want {
        Want {
            namespace: "expandvm".into(),
            service: "expandvm".into(),
            ip: "35.187.36.54".parse().unwrap(),
            ports: ports
                .iter()
                .map(|(n, p)| NamedPort {
                    name: (*n).into(),
                    port: *p,
                })
                .collect(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            service_account: "expandvm".into(),
            account_from_flag: false,
            update_service: false,
            context: None,
        }
    }

    fn subsets(value: serde_json::Value) -> Vec<EndpointSubset> {
        serde_json::from_value(value).unwrap()
    }

    fn ips(subset: &EndpointSubset) -> Vec<&str> {
        subset
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect()
    }

    #[test]
    fn new_objects_match_istioctl_1_4() {
        let w = want(&[("http", 80)]);
        let svc = serde_json::to_value(new_service(&w)).unwrap();
        assert_eq!(
            svc,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "expandvm", "namespace": "expandvm",
                    "annotations": {"alpha.istio.io/kubernetes-serviceaccounts": "expandvm"}},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]}
            })
        );
        let ep = serde_json::to_value(new_endpoints(&w)).unwrap();
        assert_eq!(
            ep,
            json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "expandvm", "namespace": "expandvm",
                    "annotations": {"alpha.istio.io/kubernetes-serviceaccounts": "expandvm"}},
                "subsets": [{"addresses": [{"ip": "35.187.36.54"}],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]
            })
        );
    }

    #[test]
    fn user_annotation_cannot_hide_the_service_account() {
        let mut w = want(&[("http", 80)]);
        w.annotations
            .insert(SERVICE_ACCOUNTS_ANNOTATION.into(), "other".into());
        w.annotations.insert("team".into(), "vm".into());
        let all = w.all_annotations();
        assert_eq!(all[SERVICE_ACCOUNTS_ANNOTATION], "expandvm");
        assert_eq!(all["team"], "vm");
    }

    /// One row of the subset-matching table.
    struct Case<'a> {
        what: &'static str,
        before: serde_json::Value,
        ports: &'a [NamedPort],
        /// Addresses per subset afterwards; None: no change.
        after: Option<Vec<Vec<&'static str>>>,
    }

    #[test]
    fn subset_matching_table() {
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let http = NamedPort {
            name: "http".into(),
            port: 80,
        };
        let grpc = NamedPort {
            name: "grpc".into(),
            port: 9090,
        };
        let p80: &[NamedPort] = std::slice::from_ref(&http);
        let p80_9090: &[NamedPort] = &[http.clone(), grpc];
        let cases = [
            Case {
                what: "empty endpoints get a new subset",
                before: json!([]),
                ports: p80,
                after: Some(vec![vec!["10.0.0.9"]]),
            },
            Case {
                what: "same port set: joins that subset",
                before: json!([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "web", "port": 80}]}]),
                ports: p80,
                after: Some(vec![vec!["10.0.0.1", "10.0.0.9"]]),
            },
            Case {
                what: "port set differs by one: new subset",
                before: json!([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "http", "port": 80}]}]),
                ports: p80_9090,
                after: Some(vec![vec!["10.0.0.1"], vec!["10.0.0.9"]]),
            },
            Case {
                what: "order of ports does not matter",
                before: json!([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 9090}, {"port": 80}]}]),
                ports: p80_9090,
                after: Some(vec![vec!["10.0.0.1", "10.0.0.9"]]),
            },
            Case {
                what: "already present: no change",
                before: json!([{"addresses": [{"ip": "10.0.0.9"}], "ports": [{"name": "http", "port": 80}]}]),
                ports: p80,
                after: None,
            },
            Case {
                what: "present in a subset with other ports: added where the ports match",
                before: json!([{"addresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 443}]}]),
                ports: p80,
                after: Some(vec![vec!["10.0.0.9"], vec!["10.0.0.9"]]),
            },
            Case {
                what: "not ready in the matching subset: moved to ready",
                before: json!([{"notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}]),
                ports: p80,
                after: Some(vec![vec!["10.0.0.9"]]),
            },
            Case {
                what: "first of two matching subsets (istioctl appended to both)",
                before: json!([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]},
                               {"addresses": [{"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]),
                ports: p80,
                after: Some(vec![vec!["10.0.0.1", "10.0.0.9"], vec!["10.0.0.2"]]),
            },
        ];
        for case in cases {
            let before = subsets(case.before);
            match (add_address(&before, ip, case.ports), case.after) {
                (AddOutcome::Present, None) => {}
                (AddOutcome::Added { subsets, .. }, Some(want)) => {
                    let got: Vec<Vec<&str>> = subsets.iter().map(ips).collect();
                    assert_eq!(got, want, "{}", case.what);
                    assert!(
                        subsets.iter().all(|s| s.not_ready_addresses.is_none()),
                        "{}",
                        case.what
                    );
                }
                (got, want) => panic!("{}: got {got:?}, want {want:?}", case.what),
            }
        }
    }

    #[test]
    fn ipv6_written_differently_is_the_same_address() {
        let before =
            subsets(json!([{"addresses": [{"ip": "2001:DB8:0:0::7"}], "ports": [{"port": 80}]}]));
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let ports = [NamedPort {
            name: "http".into(),
            port: 80,
        }];
        assert_eq!(add_address(&before, ip, &ports), AddOutcome::Present);
        assert!(remove_address(&before, ip).unwrap().is_empty());
    }

    #[test]
    fn removal_drops_empty_subsets_and_keeps_others() {
        let before = subsets(json!([
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.9"}], "ports": [{"port": 80}]},
            {"addresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 443}]},
            {"notReadyAddresses": [{"ip": "10.0.0.9"}], "addresses": [{"ip": "10.0.0.3"}], "ports": [{"port": 8080}]}
        ]));
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let after = remove_address(&before, ip).unwrap();
        let got: Vec<Vec<&str>> = after.iter().map(ips).collect();
        assert_eq!(got, [vec!["10.0.0.1"], vec!["10.0.0.3"]]);
        assert!(after[1].not_ready_addresses.is_none());
        assert_eq!(remove_address(&after, ip), None, "unknown address");
    }

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn existing_service_must_cover_the_ports() {
        let svc = service(
            json!({"metadata": {"name": "expandvm", "namespace": "expandvm",
            "annotations": {"alpha.istio.io/kubernetes-serviceaccounts": "other,expandvm"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        );
        assert_eq!(
            diff_service(&svc, &want(&[("http", 80)])),
            ServiceDiff::default()
        );
        let diff = diff_service(&svc, &want(&[("http", 80), ("grpc", 9090)]));
        assert_eq!(diff.hard, ["port 9090 (grpc) is missing"]);
        let fixed = diff.fixed.unwrap();
        assert_eq!(fixed.spec.unwrap().ports.unwrap().len(), 2);
        let diff = diff_service(&svc, &want(&[("web", 80)]));
        assert_eq!(diff.hard, ["port 80 is named \"http\", not \"web\""]);
        let mut w = want(&[("http", 80)]);
        w.service_account = "vm".into();
        let diff = diff_service(&svc, &w);
        assert!(diff.hard.is_empty());
        assert_eq!(diff.soft.len(), 1, "{diff:?}");
        let fixed = diff.fixed.unwrap();
        assert_eq!(
            fixed.metadata.annotations.unwrap()[SERVICE_ACCOUNTS_ANNOTATION],
            "other,expandvm,vm"
        );
    }

    #[test]
    fn plans_follow_what_exists() {
        let w = want(&[("http", 80)]);
        let fresh = plan_register(&Observed::default(), &w).unwrap();
        let actions: Vec<Action> = fresh.plan.changes.iter().map(|c| c.action).collect();
        assert_eq!(actions, [Action::Create, Action::Create]);
        assert_eq!(
            fresh
                .plan
                .changes
                .iter()
                .filter(|c| c.write.is_some())
                .count(),
            2
        );
        let observed = Observed {
            service: Some(new_service(&w)),
            endpoints: Some(new_endpoints(&w)),
            service_account_exists: Some(true),
            namespace_missing: false,
        };
        let again = plan_register(&observed, &w).unwrap();
        assert!(again.plan.is_noop(), "a re-run changes nothing");
        assert!(again.plan.changes.iter().all(|c| c.write.is_none()));
        assert!(again.warnings.is_empty());
        let no_account = Observed {
            service_account_exists: Some(false),
            ..observed.clone()
        };
        // Before prepare: one error, before any write, with the command that fixes it.
        let err = plan_register(&no_account, &w).unwrap_err();
        assert!(
            err.to_string()
                .contains("serviceaccount expandvm/expandvm does not exist"),
            "{err}"
        );
        assert!(
            crate::errors::Diagnose::hint(&err)
                .unwrap()
                .contains("`kubectl meshvm prepare -n expandvm`"),
            "{err:?}"
        );
        let no_namespace = Observed {
            namespace_missing: true,
            ..Observed::default()
        };
        let err = plan_register(
            &no_namespace,
            &Want {
                service_account: "vm-sa".into(),
                ..w.clone()
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("namespace expandvm does not exist"),
            "{err}"
        );
        assert!(
            crate::errors::Diagnose::hint(&err)
                .unwrap()
                .contains("`kubectl meshvm prepare -n expandvm -s vm-sa`"),
            "{err:?}"
        );

        let mut other = w.clone();
        other.ports = vec![NamedPort {
            name: "grpc".into(),
            port: 9090,
        }];
        let err = plan_register(&observed, &other).unwrap_err();
        assert!(matches!(err, Error::ServiceDiffers { .. }), "{err}");
        other.update_service = true;
        let planned = plan_register(&observed, &other).unwrap();
        assert_eq!(planned.plan.changes[0].action, Action::Update);
        assert_eq!(
            planned.plan.changes[0].write.as_ref().unwrap().verb,
            crate::plan::write::Verb::Replace
        );

        let selected = Observed {
            service: Some(service(json!({"metadata": {"name": "expandvm"},
                "spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 80}]}}))),
            ..Observed::default()
        };
        assert!(matches!(
            plan_register(&selected, &w).unwrap_err(),
            Error::ServiceHasSelector { .. }
        ));
    }

    #[test]
    fn deregister_is_idempotent_and_names_what_is_missing() {
        let w = want(&[]);
        let note = |o: &Observed, w: &Want| {
            let planned = plan_deregister(o, w).unwrap();
            assert!(planned.plan.changes.is_empty(), "nothing to write");
            planned.note.unwrap()
        };
        let n = note(&Observed::default(), &w);
        assert!(
            n.starts_with("nothing to change: service expandvm/expandvm does not exist")
                && n.contains("-n expandvm"),
            "{n}"
        );
        let n = note(
            &Observed {
                namespace_missing: true,
                ..Observed::default()
            },
            &w,
        );
        assert!(n.contains("namespace expandvm does not exist"), "{n}");
        let n = note(
            &Observed {
                service: Some(new_service(&w)),
                ..Observed::default()
            },
            &w,
        );
        assert!(n.contains("has no endpoints object"), "{n}");
        let mut other = want(&[("http", 80)]);
        other.ip = "10.1.1.1".parse().unwrap();
        let observed = Observed {
            endpoints: Some(new_endpoints(&other)),
            ..Observed::default()
        };
        let n = note(&observed, &w);
        assert!(
            n.contains("35.187.36.54 is not an endpoint of service expandvm/expandvm (its addresses: 10.1.1.1)"),
            "lists what is there: {n}"
        );
        let planned = plan_deregister(
            &observed,
            &Want {
                ip: other.ip,
                ..w.clone()
            },
        )
        .unwrap();
        assert_eq!(planned.plan.changes[0].action, Action::Update);
        assert!(
            planned.plan.changes[0]
                .detail
                .contains("(0 addresses left)")
        );
        let object = planned.plan.changes[0].object.as_ref().unwrap();
        assert!(object.get("subsets").is_none(), "{object}");
        let mut two = new_endpoints(&other);
        two.subsets.as_mut().unwrap()[0]
            .addresses
            .as_mut()
            .unwrap()
            .push(EndpointAddress {
                ip: "10.1.1.2".into(),
                ..EndpointAddress::default()
            });
        let planned = plan_deregister(
            &Observed {
                endpoints: Some(two),
                ..Observed::default()
            },
            &Want { ip: other.ip, ..w },
        )
        .unwrap();
        assert!(
            planned.plan.changes[0].detail.ends_with("(1 address left)"),
            "{}",
            planned.plan.changes[0].detail
        );
    }

    #[test]
    fn an_identity_mismatch_suggests_s_not_update_service() {
        let w = want(&[("http", 80)]);
        // The runbook's Service, made for expandvm; the VM registered as another account.
        let observed = Observed {
            service: Some(new_service(&w)),
            endpoints: None,
            service_account_exists: Some(true),
            namespace_missing: false,
        };
        let other = Want {
            service_account: "default".into(),
            ..w.clone()
        };
        let planned = plan_register(&observed, &other).unwrap();
        let warning = planned.warnings.join("\n");
        assert!(
            warning.contains("register it with -s expandvm")
                && !warning.contains("run again with --update-service"),
            "{warning}"
        );
        // -s chose the account on purpose: then listing it is what --update-service is for.
        let chosen = Want {
            account_from_flag: true,
            ..other
        };
        let warning = plan_register(&observed, &chosen)
            .unwrap()
            .warnings
            .join("\n");
        assert!(
            warning.contains("--update-service") && warning.contains("(expandvm,default)"),
            "{warning}"
        );
    }
}
