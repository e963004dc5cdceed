//! Legacy cluster → VM, the ServiceEntry form: `register --service-entry SERVICE IP[,IP…] [NAME:]PORT…`
//! makes what istioctl 1.4's `x add-to-mesh external-service` made — a STATIC ServiceEntry
//! `mesh-expansion-SERVICE` with one endpoint per IP, plus a selector-less Service for DNS and a
//! cluster VIP — but idempotently: a second run changes nothing, more IPs join the entry, and
//! `--deregister` takes IPs out again (the last one deletes what meshvm made).
//!
//! Everything here is pure: it takes what was observed and returns the rows, each with its write.
//! Sources (istio/istio@1.4.2 `istioctl/cmd/add-to-mesh.go`):
//! - `externalSvcMeshifyCmd` (lines 140-179): `SERVICE IP… PORT…`, IPs split at commas
//!   (`addServiceOnVMToMesh`, line 323), `-l`, `-a`, `-s` (default `default`; meshvm settles the
//!   account by [`crate::scope::service_account`] instead);
//! - `convertPortList` (lines 299-317): the port's protocol is its name parsed by
//!   `protocol.Parse` (pkg/config/protocol/instance.go:54-82; any other name is refused), and the
//!   ServiceEntry port is named `NAME-PORT`;
//! - `generateServiceEntry` (lines 386-429): `hosts: [SERVICE.NS.svc.cluster.local]`, the ports,
//!   `endpoints: [{address: IP, labels: -l}]`, `resolution: STATIC`;
//! - `resourceName` (lines 431-433): `mesh-expansion-SERVICE`;
//! - `generateK8sService` / `createK8sService` (lines 435-448, 474-489, and 351-359): a Service
//!   without selector, ports `{name: lower(NAME-PORT), port}`, the `-l` labels, the `-a`
//!   annotations plus `kubernetes.io/service-account.name: SA` (corev1.ServiceAccountNameKey);
//! - order: the ServiceEntry, then the Service (lines 380-383).
//!
//! istioctl refused to run when either object existed (lines 361-374); meshvm instead compares
//! and adds only what is missing. What meshvm creates carries `app.kubernetes.io/managed-by:
//! meshvm`; only objects with that label are ever deleted.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::{Error, Planned};
use crate::names::NamedPort;
use crate::plan::write::{Kind, Precondition, Resource, Write};
use crate::plan::{Action, Change};

/// The label on what meshvm created (and so may delete).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshvm");

/// The annotation istioctl 1.4 put on the Service: `corev1.ServiceAccountNameKey`
/// (istio/istio@1.4.2 istioctl/cmd/add-to-mesh.go:351).
pub const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// The protocols istio 1.4 parses from a port name, case-insensitively
/// (istio/istio@1.4.2 pkg/config/protocol/instance.go:54-82): the name → the stored protocol.
const PROTOCOLS: [(&str, &str); 11] = [
    ("tcp", "TCP"),
    ("udp", "UDP"),
    ("grpc", "GRPC"),
    ("grpc-web", "GRPC-Web"),
    ("http", "HTTP"),
    ("http2", "HTTP2"),
    ("https", "HTTPS"),
    ("tls", "TLS"),
    ("mongo", "Mongo"),
    ("redis", "Redis"),
    ("mysql", "MySQL"),
];

/// The ServiceEntry protocol of a port named `name`, as istioctl 1.4 derived it
/// (add-to-mesh.go:306-309); `Err` lists the names it accepts.
pub fn protocol(name: &str) -> Result<&'static str, String> {
    let lower = name.to_ascii_lowercase();
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            format!(
                "the port name {name:?} is not a protocol Istio 1.4 knows; name the port by its protocol ({})",
                PROTOCOLS.map(|(n, _)| n).join(", ")
            )
        })
}

/// `mesh-expansion-SERVICE` (add-to-mesh.go:431-433).
pub fn entry_name(service: &str) -> String {
    format!("mesh-expansion-{service}")
}

/// `SERVICE.NS.svc.cluster.local` (add-to-mesh.go:405; istioctl 1.4 assumed that domain).
pub fn host(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}.svc.cluster.local")
}

/// `NAME-PORT`, the ServiceEntry port name (add-to-mesh.go:313); the Service port takes it in
/// lower case (line 439).
pub fn port_name(p: &NamedPort) -> String {
    format!("{}-{}", p.name, p.port)
}

/// What the ServiceEntry form wants, resolved from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Namespace.
    pub namespace: String,
    /// The Service name (the entry is `mesh-expansion-SERVICE`).
    pub service: String,
    /// The VM addresses.
    pub ips: Vec<IpAddr>,
    /// The ports (empty with `--deregister`).
    pub ports: Vec<NamedPort>,
    /// `-l`: labels of the Service and of each new endpoint.
    pub labels: BTreeMap<String, String>,
    /// `-a`: annotations of the Service.
    pub annotations: BTreeMap<String, String>,
    /// The ServiceAccount the VM runs as.
    pub service_account: String,
    /// Whether existing objects may gain the missing ports.
    pub update_service: bool,
    /// `--context`, for hints.
    pub context: Option<String>,
}

/// What the cluster holds for the ServiceEntry form.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The version the cluster serves ServiceEntry at.
    pub version: String,
    /// `mesh-expansion-SERVICE`, as stored (with `apiVersion`).
    pub entry: Option<Value>,
    /// The Service, if it exists.
    pub service: Option<Service>,
    /// Whether the VM's ServiceAccount exists (`None`: not looked up).
    pub service_account_exists: Option<bool>,
    /// The namespace does not exist.
    pub namespace_missing: bool,
}

fn managed(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(MANAGED_BY.0)).map(String::as_str) == Some(MANAGED_BY.1)
}

fn value_managed(object: &Value) -> bool {
    object.pointer(&format!(
        "/metadata/labels/{}",
        MANAGED_BY.0.replace('/', "~1")
    )) == Some(&Value::from(MANAGED_BY.1))
}

fn endpoint(want: &Want, ip: IpAddr) -> Value {
    let mut e = json!({"address": ip.to_string()});
    if !want.labels.is_empty() {
        e["labels"] = json!(want.labels);
    }
    e
}

fn entry_port(p: &NamedPort) -> Value {
    json!({
        "number": p.port,
        "protocol": protocol(&p.name).unwrap_or("TCP"),
        "name": port_name(p),
    })
}

/// The ServiceEntry istioctl 1.4 generated, at the version the cluster serves, labelled as meshvm's.
pub fn new_entry(want: &Want, version: &str) -> Value {
    json!({
        "apiVersion": format!("networking.istio.io/{version}"),
        "kind": "ServiceEntry",
        "metadata": {
            "name": entry_name(&want.service),
            "namespace": want.namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
        },
        "spec": {
            "hosts": [host(&want.service, &want.namespace)],
            "ports": want.ports.iter().map(entry_port).collect::<Vec<_>>(),
            "endpoints": want.ips.iter().map(|ip| endpoint(want, *ip)).collect::<Vec<_>>(),
            "resolution": "STATIC",
        },
    })
}

fn service_port(p: &NamedPort) -> ServicePort {
    ServicePort {
        name: Some(port_name(p).to_ascii_lowercase()),
        port: i32::from(p.port),
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::Int(i32::from(p.port))),
        ..ServicePort::default()
    }
}

/// The selector-less Service istioctl 1.4 created beside the entry, labelled as meshvm's.
pub fn new_service(want: &Want) -> Service {
    let mut labels = want.labels.clone();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    let mut annotations = want.annotations.clone();
    annotations.insert(
        SERVICE_ACCOUNT_NAME_ANNOTATION.into(),
        want.service_account.clone(),
    );
    Service {
        metadata: ObjectMeta {
            name: Some(want.service.clone()),
            namespace: Some(want.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(want.ports.iter().map(service_port).collect()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn service_value(svc: &Service) -> Value {
    let mut v = serde_json::to_value(svc).unwrap_or_default();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Service".into();
    v
}

fn same_ip(text: &str, ip: IpAddr) -> bool {
    text.parse::<IpAddr>()
        .map_or(text == ip.to_string(), |a| a == ip)
}

/// The addresses of the entry's endpoints, as stored.
pub fn entry_addresses(entry: &Value) -> Vec<String> {
    entry
        .pointer("/spec/endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("address").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn entry_port_numbers(entry: &Value) -> Vec<u64> {
    entry
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("number").and_then(Value::as_u64))
        .collect()
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn ports_text(ports: &[NamedPort]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn reference(want: &Want) -> String {
    format!("{}/{}", want.namespace, entry_name(&want.service))
}

/// The entry must be the STATIC entry of the Service's host; anything else under that name was
/// not made for this and is left alone.
fn check_entry(entry: &Value, want: &Want) -> Result<(), Error> {
    let wanted_host = host(&want.service, &want.namespace);
    let hosts: Vec<&str> = entry
        .pointer("/spec/hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let resolution = entry
        .pointer("/spec/resolution")
        .and_then(Value::as_str)
        .unwrap_or("NONE");
    if resolution != "STATIC" || !hosts.contains(&wanted_host.as_str()) {
        return Err(Error::ServiceEntryDiffers {
            entry: reference(want),
            differences: format!(
                "it is a {resolution} entry for {}, not the STATIC entry for {wanted_host}",
                if hosts.is_empty() {
                    "no host".to_owned()
                } else {
                    hosts.join(",")
                }
            ),
            update: false,
        });
    }
    Ok(())
}

/// Plan `register --service-entry SERVICE IP… PORT…`: the ServiceEntry row, then the Service row.
pub fn plan_register(observed: &Observed, want: &Want) -> Result<Planned, Error> {
    if observed.namespace_missing || observed.service_account_exists == Some(false) {
        return Err(super::legacy::not_prepared(
            observed.namespace_missing,
            &want.namespace,
            &want.service_account,
            None,
            want.context.as_deref(),
        ));
    }
    let mut planned = Planned::default();
    let name = entry_name(&want.service);
    let ns = Some(want.namespace.as_str());
    match &observed.entry {
        None => {
            let object = new_entry(want, &observed.version);
            planned.plan.push(
                Change::new(Action::Create, Kind::ServiceEntry, ns, &name)
                    .detail(format!(
                        "STATIC, endpoints {}, ports {}",
                        list(&want.ips),
                        ports_text(&want.ports)
                    ))
                    .object(object.clone())
                    .write(Write::create(Kind::ServiceEntry, object)),
            );
        }
        Some(current) => {
            check_entry(current, want)?;
            let have = entry_addresses(current);
            let missing_ips: Vec<IpAddr> = want
                .ips
                .iter()
                .copied()
                .filter(|ip| !have.iter().any(|a| same_ip(a, *ip)))
                .collect();
            let numbers = entry_port_numbers(current);
            let missing_ports: Vec<&NamedPort> = want
                .ports
                .iter()
                .filter(|p| !numbers.contains(&u64::from(p.port)))
                .collect();
            if !missing_ports.is_empty() && !want.update_service {
                return Err(Error::ServiceEntryDiffers {
                    entry: reference(want),
                    differences: format!(
                        "it lacks port(s) {}",
                        missing_ports
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    update: true,
                });
            }
            if missing_ips.is_empty() && missing_ports.is_empty() {
                planned.plan.push(
                    Change::new(Action::Unchanged, Kind::ServiceEntry, ns, &name).detail(format!(
                        "already has {} ({})",
                        list(&want.ips),
                        ports_text(&want.ports)
                    )),
                );
            } else {
                let mut updated = current.clone();
                let spec = &mut updated["spec"];
                let mut details = Vec::new();
                if !missing_ips.is_empty() {
                    let endpoints = spec["endpoints"].as_array().cloned().unwrap_or_default();
                    let added = missing_ips.iter().map(|ip| endpoint(want, *ip));
                    spec["endpoints"] = Value::Array(endpoints.into_iter().chain(added).collect());
                    details.push(format!("added {}", list(&missing_ips)));
                }
                if !missing_ports.is_empty() {
                    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
                    let added = missing_ports.iter().map(|p| entry_port(p));
                    spec["ports"] = Value::Array(ports.into_iter().chain(added).collect());
                    details.push(format!(
                        "added port(s) {}",
                        missing_ports
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                planned.plan.push(
                    Change::new(Action::Update, Kind::ServiceEntry, ns, &name)
                        .detail(details.join("; "))
                        .object(updated.clone())
                        // Guarded by the resourceVersion read: a concurrent writer makes it 409,
                        // and the run observes again.
                        .write(Write::replace(Kind::ServiceEntry, updated)),
                );
            }
        }
    }
    plan_service(observed, want, &mut planned)?;
    Ok(planned)
}

fn plan_service(observed: &Observed, want: &Want, planned: &mut Planned) -> Result<(), Error> {
    let ns = Some(want.namespace.as_str());
    let Some(current) = &observed.service else {
        let object = service_value(&new_service(want));
        planned.plan.push(
            Change::new(Action::Create, Kind::Service, ns, &want.service)
                .detail(format!(
                    "selector-less, ports {}",
                    want.ports
                        .iter()
                        .map(|p| port_name(p).to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .object(object.clone())
                .write(Write::create(Kind::Service, object)),
        );
        return Ok(());
    };
    let have: Vec<i32> = current
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.port)
        .collect();
    let missing: Vec<&NamedPort> = want
        .ports
        .iter()
        .filter(|p| !have.contains(&i32::from(p.port)))
        .collect();
    let missing_text = missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if !managed(current.metadata.labels.as_ref()) {
        // Not meshvm's: never changed. It still names the host; say what it lacks.
        if !missing.is_empty() {
            planned.warnings.push(format!(
                "service {}/{} was not made by meshvm and lacks port(s) {missing_text}: it is left as it is, so its cluster IP does not serve them",
                want.namespace, want.service
            ));
        }
        planned.plan.push(
            Change::new(Action::Unchanged, Kind::Service, ns, &want.service)
                .detail("exists, not made by meshvm: left as it is"),
        );
        return Ok(());
    }
    if missing.is_empty() {
        planned.plan.push(
            Change::new(Action::Unchanged, Kind::Service, ns, &want.service)
                .detail("serves the ports"),
        );
        return Ok(());
    }
    if !want.update_service {
        return Err(Error::ServiceDiffers {
            namespace: want.namespace.clone(),
            name: want.service.clone(),
            differences: format!("port(s) {missing_text} missing"),
            keep_identity: None,
        });
    }
    let mut fixed = current.clone();
    fixed
        .spec
        .get_or_insert_with(ServiceSpec::default)
        .ports
        .get_or_insert_with(Vec::new)
        .extend(missing.iter().map(|p| service_port(p)));
    let object = service_value(&fixed);
    planned.plan.push(
        Change::new(Action::Update, Kind::Service, ns, &want.service)
            .detail(format!("added port(s) {missing_text}"))
            .object(object.clone())
            .write(Write::replace(Kind::Service, object)),
    );
    Ok(())
}

fn rv(object: &Value) -> Precondition {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map_or(Precondition::None, |v| {
            Precondition::ResourceVersion(v.to_owned())
        })
}

/// Plan `register --service-entry --deregister SERVICE IP…`: take the IPs out of the entry; when
/// none is left, delete the entry and the Service meshvm made (never objects it did not make).
pub fn plan_deregister(observed: &Observed, want: &Want) -> Result<Planned, Error> {
    let mut planned = Planned::default();
    let name = entry_name(&want.service);
    let ns = Some(want.namespace.as_str());
    let Some(current) = &observed.entry else {
        planned.note = Some(format!(
            "nothing to change: serviceentry {} does not exist{}",
            reference(want),
            if observed.namespace_missing {
                format!(" (namespace {} does not exist)", want.namespace)
            } else {
                String::new()
            }
        ));
        return Ok(planned);
    };
    check_entry(current, want)?;
    let endpoints = current
        .pointer("/spec/endpoints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_wanted = |e: &Value| {
        e.get("address")
            .and_then(Value::as_str)
            .is_some_and(|a| want.ips.iter().any(|ip| same_ip(a, *ip)))
    };
    let (gone, kept): (Vec<Value>, Vec<Value>) = endpoints.into_iter().partition(is_wanted);
    if gone.is_empty() {
        planned.note = Some(format!(
            "nothing to change: {} {} not an endpoint of serviceentry {} (its endpoints: {})",
            list(&want.ips),
            if want.ips.len() == 1 { "is" } else { "are" },
            reference(want),
            entry_addresses(current).join(",")
        ));
        return Ok(planned);
    }
    if !kept.is_empty() {
        let mut updated = current.clone();
        updated["spec"]["endpoints"] = Value::Array(kept.clone());
        planned.plan.push(
            Change::new(Action::Update, Kind::ServiceEntry, ns, &name)
                .detail(format!("removed {} ({} left)", list(&want.ips), kept.len()))
                .object(updated.clone())
                .write(Write::replace(Kind::ServiceEntry, updated)),
        );
        return Ok(planned);
    }
    // The last endpoint: Istio refuses a STATIC entry without endpoints (istio/istio@1.4.2
    // pkg/config/validation/validation.go:2415-2419), so the entry goes — only if meshvm made it.
    if !value_managed(current) {
        return Err(Error::NotMeshvms {
            object: format!("serviceentry {}", reference(want)),
            command: format!("kubectl delete serviceentry {name} -n {}", want.namespace),
        });
    }
    planned.plan.push(
        Change::new(Action::Delete, Kind::ServiceEntry, ns, &name)
            .detail(format!("removed its last endpoint {}", list(&want.ips)))
            .write(
                Write::delete(Resource::of(Kind::ServiceEntry, current)).precondition(rv(current)),
            ),
    );
    match &observed.service {
        Some(svc) if managed(svc.metadata.labels.as_ref()) => {
            let value = service_value(svc);
            planned.plan.push(
                Change::new(Action::Delete, Kind::Service, ns, &want.service)
                    .detail("made by meshvm with the entry")
                    .write(
                        Write::delete(Resource::new(Kind::Service, "v1")).precondition(rv(&value)),
                    ),
            );
        }
        Some(_) => planned.plan.push(
            Change::new(Action::Unchanged, Kind::Service, ns, &want.service)
                .detail("not made by meshvm: left as it is"),
        ),
        None => {}
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Want {
        Want {
            namespace: "vm".into(),
            service: "vmhttp".into(),
            ips: vec!["172.12.23.125".parse().unwrap()],
            ports: vec![
                NamedPort {
                    name: "http".into(),
                    port: 9080,
                },
                NamedPort {
                    name: "tcp".into(),
                    port: 8888,
                },
            ],
            labels: [("app".to_owned(), "test".to_owned())].into(),
            annotations: [("env".to_owned(), "stage".to_owned())].into(),
            service_account: "stageadmin".into(),
            update_service: false,
            context: None,
        }
    }

    fn observed() -> Observed {
        Observed {
            version: "v1alpha3".into(),
            service_account_exists: Some(true),
            ..Observed::default()
        }
    }

    #[test]
    fn objects_are_istioctl_1_4s() {
        // istioctl 1.4.2 `x add-to-mesh external-service vmhttp 172.12.23.125 http:9080 tcp:8888
        // -l app=test -a env=stage -s stageadmin` (its example), plus meshvm's label.
        let w = want();
        assert_eq!(
            new_entry(&w, "v1alpha3"),
            json!({
                "apiVersion": "networking.istio.io/v1alpha3", "kind": "ServiceEntry",
                "metadata": {"name": "mesh-expansion-vmhttp", "namespace": "vm",
                             "labels": {"app.kubernetes.io/managed-by": "meshvm"}},
                "spec": {
                    "hosts": ["vmhttp.vm.svc.cluster.local"],
                    "ports": [{"number": 9080, "protocol": "HTTP", "name": "http-9080"},
                              {"number": 8888, "protocol": "TCP", "name": "tcp-8888"}],
                    "endpoints": [{"address": "172.12.23.125", "labels": {"app": "test"}}],
                    "resolution": "STATIC"
                }
            })
        );
        let svc = service_value(&new_service(&w));
        assert_eq!(
            svc["metadata"]["annotations"],
            json!({"env": "stage", "kubernetes.io/service-account.name": "stageadmin"})
        );
        assert_eq!(
            svc["metadata"]["labels"],
            json!({"app": "test", "app.kubernetes.io/managed-by": "meshvm"})
        );
        assert!(svc["spec"].get("selector").is_none());
        assert_eq!(svc["spec"]["ports"][0]["name"], "http-9080");
        assert_eq!(protocol("GRPC-web").unwrap(), "GRPC-Web");
        assert!(protocol("web").unwrap_err().contains("http, http2, https"));
    }

    #[test]
    fn register_creates_then_adds_then_changes_nothing() {
        let w = want();
        let fresh = plan_register(&observed(), &w).unwrap();
        let rows: Vec<(Kind, Action)> = fresh
            .plan
            .changes
            .iter()
            .map(|c| (c.kind, c.action))
            .collect();
        assert_eq!(
            rows,
            [
                (Kind::ServiceEntry, Action::Create),
                (Kind::Service, Action::Create)
            ]
        );
        let mut entry = new_entry(&w, "v1alpha3");
        entry["metadata"]["resourceVersion"] = "7".into();
        let done = Observed {
            entry: Some(entry.clone()),
            service: Some(new_service(&w)),
            ..observed()
        };
        let again = plan_register(&done, &w).unwrap();
        assert!(again.plan.is_noop(), "{:?}", again.plan);
        let second = Want {
            ips: vec!["172.12.23.126".parse().unwrap(), w.ips[0]],
            ..w.clone()
        };
        let more = plan_register(&done, &second).unwrap();
        let row = &more.plan.changes[0];
        assert_eq!(row.action, Action::Update);
        assert_eq!(row.detail, "added 172.12.23.126");
        let write = row.write.as_ref().unwrap();
        assert_eq!(
            write.precondition,
            Precondition::ResourceVersion("7".into())
        );
        assert_eq!(
            entry_addresses(&write.object),
            ["172.12.23.125", "172.12.23.126"]
        );
        // A port the entry lacks: refused unless --update-service.
        let wider = Want {
            ports: vec![NamedPort {
                name: "grpc".into(),
                port: 9090,
            }],
            ..w.clone()
        };
        let err = plan_register(&done, &wider).unwrap_err();
        assert!(err.to_string().contains("lacks port(s) grpc:9090"), "{err}");
        // Someone else's entry under the name, for another host: left alone.
        let mut foreign = entry.clone();
        foreign["spec"]["hosts"] = json!(["other.example"]);
        let err = plan_register(
            &Observed {
                entry: Some(foreign),
                ..observed()
            },
            &w,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not the STATIC entry"), "{err}");
    }

    #[test]
    fn a_service_meshvm_did_not_make_is_left_alone() {
        let w = want();
        let mut theirs = new_service(&w);
        theirs.metadata.labels = None;
        theirs.spec.as_mut().unwrap().ports = Some(Vec::new());
        let planned = plan_register(
            &Observed {
                service: Some(theirs.clone()),
                ..observed()
            },
            &w,
        )
        .unwrap();
        assert_eq!(planned.plan.changes[1].action, Action::Unchanged);
        assert!(planned.plan.changes[1].write.is_none());
        assert!(planned.warnings[0].contains("not made by meshvm"));
        let mut entry = new_entry(&w, "v1alpha3");
        entry["metadata"]["resourceVersion"] = "3".into();
        let gone = plan_deregister(
            &Observed {
                entry: Some(entry),
                service: Some(theirs),
                ..observed()
            },
            &w,
        )
        .unwrap();
        let rows: Vec<(Kind, Action)> = gone
            .plan
            .changes
            .iter()
            .map(|c| (c.kind, c.action))
            .collect();
        assert_eq!(
            rows,
            [
                (Kind::ServiceEntry, Action::Delete),
                (Kind::Service, Action::Unchanged)
            ]
        );
    }

    #[test]
    fn deregister_removes_ips_then_what_meshvm_made() {
        let mut w = want();
        w.ips.push("172.12.23.126".parse().unwrap());
        let mut entry = new_entry(&w, "v1alpha3");
        entry["metadata"]["resourceVersion"] = "9".into();
        let mut svc = new_service(&w);
        svc.metadata.resource_version = Some("4".into());
        let o = Observed {
            entry: Some(entry.clone()),
            service: Some(svc),
            ..observed()
        };
        let one = Want {
            ips: vec![w.ips[0]],
            ..w.clone()
        };
        let planned = plan_deregister(&o, &one).unwrap();
        assert_eq!(planned.plan.changes.len(), 1);
        assert_eq!(
            planned.plan.changes[0].detail,
            "removed 172.12.23.125 (1 left)"
        );
        let all = plan_deregister(&o, &w).unwrap();
        let deletes: Vec<_> = all
            .plan
            .changes
            .iter()
            .map(|c| {
                (
                    c.kind,
                    c.action,
                    c.write.as_ref().unwrap().precondition.clone(),
                )
            })
            .collect();
        assert_eq!(
            deletes,
            [
                (
                    Kind::ServiceEntry,
                    Action::Delete,
                    Precondition::ResourceVersion("9".into())
                ),
                (
                    Kind::Service,
                    Action::Delete,
                    Precondition::ResourceVersion("4".into())
                ),
            ]
        );
        // Not an endpoint, or no entry: nothing to do, said so.
        let other = Want {
            ips: vec!["10.9.9.9".parse().unwrap()],
            ..w.clone()
        };
        let n = plan_deregister(&o, &other).unwrap();
        assert!(n.plan.changes.is_empty());
        assert!(n.note.unwrap().contains("is not an endpoint"));
        let n = plan_deregister(&observed(), &w).unwrap();
        assert!(n.note.unwrap().contains("does not exist"));
        // The last IP of an entry meshvm did not make: refused, with the command.
        let mut foreign = entry;
        foreign["metadata"]["labels"] = json!({});
        let err = plan_deregister(
            &Observed {
                entry: Some(foreign),
                ..observed()
            },
            &w,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not made by meshvm"), "{err}");
    }
}
