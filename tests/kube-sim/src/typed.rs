//! Strict decoding of built-in kinds: the fields k8s-openapi's types (the Go structs' mirror)
//! do not know are unknown to the apiserver too — refused under `fieldValidation=Strict`,
//! warned about under `Warn`, and dropped in every case, as decoding into Go structs drops them.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Why an object does not decode as its kind.
pub enum Decode {
    /// It decodes; these dotted paths were not part of the type.
    Unknown(Vec<String>),
    /// A field has the wrong type (the apiserver answers 400).
    Invalid(String),
}

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

fn unknown_paths(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_paths(v, kv, &p, out),
                    // Nulls and empty values vanish in the round trip without being unknown.
                    None if v.is_null() => {}
                    None if v.as_object().is_some_and(serde_json::Map::is_empty) => {}
                    None if v.as_array().is_some_and(Vec::is_empty) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                unknown_paths(iv, kv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes `obj` as the built-in `group/plural`; None for kinds without a typed mirror.
pub fn decode(group: &str, plural: &str, obj: &Value) -> Option<Decode> {
    let known = match (group, plural) {
        ("", "namespaces") => round_trip::<Namespace>(obj),
        ("", "serviceaccounts") => round_trip::<ServiceAccount>(obj),
        ("", "secrets") => round_trip::<Secret>(obj),
        ("", "configmaps") => round_trip::<ConfigMap>(obj),
        ("", "services") => round_trip::<Service>(obj),
        ("", "endpoints") => round_trip::<Endpoints>(obj),
        ("", "pods") => round_trip::<Pod>(obj),
        ("", "events") => round_trip::<Event>(obj),
        ("apps", "deployments") => round_trip::<Deployment>(obj),
        ("networking.k8s.io", "servicecidrs") => round_trip::<ServiceCIDR>(obj),
        ("rbac.authorization.k8s.io", "roles") => round_trip::<Role>(obj),
        ("rbac.authorization.k8s.io", "rolebindings") => round_trip::<RoleBinding>(obj),
        ("rbac.authorization.k8s.io", "clusterroles") => round_trip::<ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            round_trip::<ClusterRoleBinding>(obj)
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            round_trip::<CustomResourceDefinition>(obj)
        }
        _ => return None,
    };
    Some(match known {
        Ok(k) => {
            let mut out = Vec::new();
            unknown_paths(obj, &k, "", &mut out);
            Decode::Unknown(out)
        }
        // A missing required field is the apiserver's validation's to report (422), not the decoder's.
        Err(e) if e.starts_with("missing field") => Decode::Unknown(Vec::new()),
        Err(e) => Decode::Invalid(e),
    })
}

/// Removes a dotted path (`spec.ports[0].portz`) from the object.
pub fn remove(obj: &mut Value, path: &str) {
    let mut parts: Vec<(String, Option<usize>)> = Vec::new();
    for seg in path.split('.') {
        let mut rest = seg;
        let name_end = rest.find('[').unwrap_or(rest.len());
        parts.push((rest[..name_end].to_string(), None));
        rest = &rest[name_end..];
        while let Some(close) = rest.find(']') {
            let idx = rest[1..close].parse().ok();
            parts.push((String::new(), idx));
            rest = &rest[close + 1..];
        }
    }
    let Some(((last, _), parents)) = parts.split_last() else {
        return;
    };
    let mut cur = obj;
    for (key, idx) in parents {
        let next = match idx {
            Some(i) => cur.get_mut(*i),
            None => cur.get_mut(key.as_str()),
        };
        let Some(n) = next else { return };
        cur = n;
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_and_removed() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {}},
            "spec": {"ports": [{"port": 80, "portz": 1}], "typo": true, "selector": null}});
        let Some(Decode::Unknown(paths)) = decode("", "services", &svc) else {
            panic!("decodes")
        };
        assert_eq!(paths, ["spec.ports[0].portz", "spec.typo"]);
        for p in &paths {
            remove(&mut svc, p);
        }
        assert_eq!(svc["spec"]["ports"], json!([{"port": 80}]));
        assert!(svc["spec"].get("typo").is_none());
    }

    #[test]
    fn wrong_types_are_invalid_and_missing_fields_left_to_validation() {
        let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": "eighty"}]}});
        assert!(matches!(
            decode("", "services", &bad),
            Some(Decode::Invalid(_))
        ));
        let no_selector = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}});
        assert!(
            matches!(decode("apps", "deployments", &no_selector), Some(Decode::Unknown(p)) if p.is_empty())
        );
    }
}
