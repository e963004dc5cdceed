//! Server-side printing: `meta.k8s.io/v1` Table responses for `kubectl get`, with the columns
//! kube-apiserver's printers (built-in kinds) and a CRD's `additionalPrinterColumns` define.

use serde_json::{Value, json};

use crate::registry::ResourceType;
use crate::util::{self, str_at};

/// What a row carries besides its cells (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the apiserver's default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// Parses the query parameter.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// Does the `Accept` header ask for a Table first?
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.replace(' ', "").contains("as=Table"))
}

/// The Content-Type of `meta.k8s.io/v1` Table responses.
pub const CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// The Content-Type of a Table at `meta.k8s.io/<version>`.
pub fn content_type(version: &str) -> String {
    format!("application/json;as=Table;v={version};g=meta.k8s.io")
}

/// A Table (as [`table`] builds it, at v1) moved to `meta.k8s.io/<version>`: before 1.15 only
/// v1beta1 exists, for the Table and the rows' PartialObjectMetadata alike.
pub fn at_version(mut t: Value, version: &str) -> Value {
    let api_version = json!(format!("meta.k8s.io/{version}"));
    t["apiVersion"] = api_version.clone();
    if let Some(rows) = t.get_mut("rows").and_then(Value::as_array_mut) {
        for r in rows {
            if let Some(o) = r.get_mut("object")
                && o.get("kind").and_then(Value::as_str) == Some("PartialObjectMetadata")
            {
                o["apiVersion"] = api_version.clone();
            }
        }
    }
    t
}

/// Go's `duration.HumanDuration`, as the AGE column shows it.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2025-01-01T00:00:00Z`).
#[allow(clippy::many_single_char_names)]
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant), the inverse of util::rfc3339.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

fn age(obj: &Value, now: i64) -> Value {
    match str_at(obj, &["metadata", "creationTimestamp"]).and_then(parse_rfc3339) {
        Some(t) => json!(human_duration(now - t)),
        None => json!("<unknown>"),
    }
}

/// One column: header, type, priority (1: only with `-o wide`).
struct Col {
    name: String,
    ty: &'static str,
    priority: i64,
}

fn col(name: &str, ty: &'static str, priority: i64) -> Col {
    Col {
        name: name.to_string(),
        ty,
        priority,
    }
}

fn count(v: Option<&Value>) -> Value {
    json!(match v {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    })
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn service_cells(o: &Value) -> Vec<Value> {
    let spec = o.get("spec").cloned().unwrap_or_default();
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let external_ips: Vec<String> = crate::util::strings(spec.get("externalIPs"));
    let external = match ty {
        "ExternalName" => spec
            .get("externalName")
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_string(),
        "LoadBalancer" => {
            let mut all = external_ips.clone();
            if let Some(ing) = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
            {
                for i in ing {
                    if let Some(v) = i
                        .get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                    {
                        all.push(v.to_string());
                    }
                }
            }
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        _ => or_none(external_ips.join(",")),
    };
    let ports: Vec<String> = spec
        .get("ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(n) if n != 0 => format!("{port}:{n}/{proto}"),
                        _ => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let selector: Vec<String> = spec
        .get("selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    vec![
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(or_none(ports.join(","))),
        Value::Null, // age, filled by the caller
        json!(or_none(selector.join(","))),
    ]
}

fn endpoints_cell(o: &Value) -> String {
    let mut eps = Vec::new();
    for s in o
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = s
            .get("ports")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(|p| p.get("port").and_then(Value::as_i64))
                    .collect()
            })
            .unwrap_or_default();
        for a in s
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
            if ports.is_empty() {
                eps.push(ip.to_string());
            }
            for p in &ports {
                eps.push(format!("{ip}:{p}"));
            }
        }
    }
    if eps.is_empty() {
        return "<none>".into();
    }
    if eps.len() > 3 {
        return format!("{} + {} more...", eps[..3].join(","), eps.len() - 3);
    }
    eps.join(",")
}

fn simple_path(obj: &Value, path: &str) -> Option<Value> {
    // `.spec.host`, `.spec.servers[0].port.number`: the forms printer columns use.
    let mut cur = obj;
    for part in path.trim_start_matches('.').split('.') {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur.clone())
}

/// Columns and cells for one kind; `printer_columns` are a CRD version's.
fn columns(rt: &ResourceType, printer_columns: Option<&Vec<Value>>) -> Vec<Col> {
    let mut cols = vec![col("Name", "string", 0)];
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => cols.extend([col("Status", "string", 0), col("Age", "string", 0)]),
        ("", "serviceaccounts") => {
            cols.extend([col("Secrets", "integer", 0), col("Age", "string", 0)]);
        }
        ("", "secrets") => cols.extend([
            col("Type", "string", 0),
            col("Data", "integer", 0),
            col("Age", "string", 0),
        ]),
        ("", "configmaps") => cols.extend([col("Data", "integer", 0), col("Age", "string", 0)]),
        ("", "services") => cols.extend([
            col("Type", "string", 0),
            col("Cluster-IP", "string", 0),
            col("External-IP", "string", 0),
            col("Port(s)", "string", 0),
            col("Age", "string", 0),
            col("Selector", "string", 1),
        ]),
        ("", "endpoints") => cols.extend([col("Endpoints", "string", 0), col("Age", "string", 0)]),
        ("", "pods") => cols.extend([
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            col("Age", "string", 0),
            col("IP", "string", 1),
            col("Node", "string", 1),
        ]),
        ("apps", "deployments") => cols.extend([
            col("Ready", "string", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            col("Age", "string", 0),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ]),
        ("networking.k8s.io", "servicecidrs") => {
            cols.extend([col("CIDRs", "string", 0), col("Age", "string", 0)]);
        }
        // kubernetes pkg/printers/internalversion/printers.go: roles and cluster roles print
        // NAME, CREATED AT; bindings NAME, ROLE, AGE and (wide) USERS, GROUPS, SERVICEACCOUNTS.
        ("apiextensions.k8s.io", "customresourcedefinitions")
        | ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            cols.push(col("Created At", "date", 0));
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => cols.extend([
            col("Role", "string", 0),
            col("Age", "string", 0),
            col("Users", "string", 1),
            col("Groups", "string", 1),
            col("ServiceAccounts", "string", 1),
        ]),
        _ if !rt.builtin => match printer_columns {
            Some(pcs) if !pcs.is_empty() => {
                for pc in pcs {
                    let ty = match pc.get("type").and_then(Value::as_str) {
                        Some("integer") => "integer",
                        Some("number") => "number",
                        Some("boolean") => "boolean",
                        Some("date") => "date",
                        _ => "string",
                    };
                    cols.push(Col {
                        name: pc
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        ty,
                        priority: pc.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    });
                }
            }
            _ => cols.push(col("Age", "date", 0)),
        },
        _ => cols.push(col("Age", "string", 0)),
    }
    cols
}

fn cells(
    rt: &ResourceType,
    o: &Value,
    printer_columns: Option<&Vec<Value>>,
    now: i64,
) -> Vec<Value> {
    let name = json!(util::name_of(o));
    let a = age(o, now);
    let s = |p: &[&str]| json!(str_at(o, p).unwrap_or(""));
    let rest: Vec<Value> = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => vec![s(&["status", "phase"]), a],
        ("", "serviceaccounts") => vec![count(o.get("secrets")), a],
        ("", "secrets") => vec![s(&["type"]), count(o.get("data")), a],
        ("", "configmaps") => vec![
            json!(
                o.get("data")
                    .map_or(0, |d| d.as_object().map_or(0, serde_json::Map::len))
                    + o.get("binaryData")
                        .map_or(0, |d| d.as_object().map_or(0, serde_json::Map::len))
            ),
            a,
        ],
        ("", "services") => {
            let mut c = service_cells(o);
            c[4] = a;
            c
        }
        ("", "endpoints") => vec![json!(endpoints_cell(o)), a],
        ("", "pods") => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |cs| {
                    cs.iter()
                        .filter(|c| c.get("ready") == Some(&json!(true)))
                        .count()
                });
            let restarts: i64 = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |cs| {
                    cs.iter()
                        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                        .sum()
                });
            vec![
                json!(format!("{ready}/{total}")),
                s(&["status", "phase"]),
                json!(restarts.to_string()),
                a,
                json!(str_at(o, &["status", "podIP"]).unwrap_or("<none>")),
                json!(str_at(o, &["spec", "nodeName"]).unwrap_or("<none>")),
            ]
        }
        ("apps", "deployments") => {
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let ready = o
                .pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let containers = o
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let join = |k: &str| {
                containers
                    .iter()
                    .filter_map(|c| c.get(k).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let selector: Vec<String> = o
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                json!(format!("{ready}/{want}")),
                json!(
                    o.pointer("/status/updatedReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                ),
                json!(
                    o.pointer("/status/availableReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                ),
                a,
                json!(join("name")),
                json!(join("image")),
                json!(selector.join(",")),
            ]
        }
        ("networking.k8s.io", "servicecidrs") => {
            let cidrs: Vec<&str> = o
                .pointer("/spec/cidrs")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![json!(cidrs.join(",")), a]
        }
        ("apiextensions.k8s.io", "customresourcedefinitions")
        | ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            vec![s(&["metadata", "creationTimestamp"])]
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            let subjects = o
                .get("subjects")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            let of = |kind: &str| {
                subjects
                    .iter()
                    .filter(|x| x["kind"] == kind)
                    .map(|x| {
                        let n = x["name"].as_str().unwrap_or("");
                        match x["namespace"].as_str() {
                            Some(ns) if kind == "ServiceAccount" => format!("{ns}/{n}"),
                            _ => n.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                json!(format!(
                    "{}/{}",
                    str_at(o, &["roleRef", "kind"]).unwrap_or(""),
                    str_at(o, &["roleRef", "name"]).unwrap_or("")
                )),
                a,
                json!(of("User")),
                json!(of("Group")),
                json!(of("ServiceAccount")),
            ]
        }
        _ if !rt.builtin => match printer_columns {
            Some(pcs) if !pcs.is_empty() => pcs
                .iter()
                .map(|pc| {
                    let path = pc.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                    let ty = pc.get("type").and_then(Value::as_str).unwrap_or("string");
                    match simple_path(o, path) {
                        None | Some(Value::Null) => Value::Null,
                        Some(Value::String(t)) if ty == "date" => parse_rfc3339(&t)
                            .map_or(Value::Null, |t| json!(human_duration(now - t))),
                        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => v,
                        Some(other) => json!(other.to_string()),
                    }
                })
                .collect(),
            _ => vec![a],
        },
        _ => vec![a],
    };
    let mut out = vec![name];
    out.extend(rest);
    out
}

/// The printer columns of the CRD version serving this request, if any.
pub fn crd_printer_columns(crd: Option<&Value>, version: &str) -> Option<Vec<Value>> {
    crd?.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
        .get("additionalPrinterColumns")?
        .as_array()
        .cloned()
}

/// Builds the Table for these objects (as stored) and the list metadata.
pub fn table(
    rt: &ResourceType,
    version: &str,
    items: &[&Value],
    meta: &Value,
    printer_columns: Option<&Vec<Value>>,
    include: Include,
    now: i64,
) -> Value {
    let cols = columns(rt, printer_columns);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            let mut d = json!({"name": c.name, "type": c.ty, "format": "", "description": "", "priority": c.priority});
            if c.name == "Name" {
                d["format"] = json!("name");
            }
            d
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(rt, o, printer_columns, now)});
            match include {
                Include::None => {}
                Include::Metadata => {
                    let mut m = o.get("metadata").cloned().unwrap_or_default();
                    if let Some(mm) = m.as_object_mut() {
                        mm.remove("managedFields");
                    }
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m});
                }
                Include::Object => {
                    row["object"] = crate::store::State::output(o, rt, version);
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta.clone(),
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_go() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (400 * 86_400, "400d"),
            (3 * 365 * 86_400, "3y"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        for t in [0, 951_782_400, 1_764_120_328] {
            assert_eq!(parse_rfc3339(&util::rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn accept_table_only_when_preferred() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn service_columns() {
        let o = json!({"metadata": {"name": "gw"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
            "ports": [{"port": 15443, "nodePort": 30001, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "gw.example.com"}]}}});
        let c = service_cells(&o);
        assert_eq!(c[2], "gw.example.com");
        assert_eq!(c[3], "15443:30001/TCP");
    }
}
