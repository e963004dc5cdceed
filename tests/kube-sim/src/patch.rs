//! The patch formats clients send: JSON merge patch, JSON patch and strategic merge patch.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("json patch path {path:?} must start with '/'"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("doc is missing path: /{}", tokens.join("/")))?,
            Value::Array(a) => {
                let i: usize = t
                    .parse()
                    .map_err(|_| format!("invalid array index {t:?}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("array index {i} out of bounds"))?
            }
            _ => return Err(format!("doc is missing path: /{}", tokens.join("/"))),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?}"))?;
            if i > a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("cannot add at /{}", tokens.join("/"))),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let Some((last, parents)) = tokens.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("unable to remove nonexistent key: {last}: missing value")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove /{}", tokens.join("/"))),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a json patch must be a JSON array of operations")?;
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("json patch operation is missing \"op\"")?;
        let path = split_pointer(op.get("path").and_then(Value::as_str).unwrap_or(""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("json patch {kind} operation is missing \"value\""))
        };
        let from = || split_pointer(op.get("from").and_then(Value::as_str).unwrap_or(""));
        match kind {
            "add" => add(doc, &path, value()?)?,
            "remove" => {
                remove(doc, &path)?;
            }
            "replace" => {
                remove(doc, &path)?;
                add(doc, &path, value()?)?;
            }
            "move" => {
                let v = remove(doc, &from()?)?;
                add(doc, &path, v)?;
            }
            "copy" => {
                let from = from()?;
                let v = parent_mut(doc, &from)?.clone();
                add(doc, &path, v)?;
            }
            "test" => {
                let expected = value()?;
                if *parent_mut(doc, &path)? != expected {
                    return Err(format!("testing value /{} failed", path.join("/")));
                }
            }
            other => return Err(format!("unexpected kind: {other}")),
        }
    }
    Ok(())
}

/// The merge key of a list field of a built-in kind, when the list merges by key.
/// Simplification: chosen by field name alone (and, for `ports`, by whether items carry `containerPort`).
pub fn merge_key(field: &str, sample: &[&Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" | "volumeDevices" => "mountPath",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ownerReferences" => "uid",
        "readinessGates" => "conditionType",
        "ports" => {
            if sample.iter().any(|v| v.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Strategic merge patch as kubectl sends it for built-in kinds: maps merge, lists listed by
/// [`merge_key`] merge by key, other lists are replaced; `$patch`, `$retainKeys`,
/// `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives are honoured.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return Ok(());
    }
    if p.get("$patch").and_then(Value::as_str) == Some("delete") {
        *target = Value::Object(Map::new());
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.as_array().cloned().unwrap_or_default()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let drop = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = t.get_mut(field) {
                list.retain(|x| !drop.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Array(items) => {
                let live: Vec<Value> = t
                    .get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let sample: Vec<&Value> = items.iter().chain(live.iter()).collect();
                if let Some(key) = merge_key(k, &sample) {
                    let merged = merge_keyed_list(live, items, key)?;
                    t.insert(k.clone(), Value::Array(merged));
                } else {
                    t.insert(k.clone(), Value::Array(items.clone()));
                }
            }
            Value::Object(_) => {
                strategic_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v)?;
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    for (field, order) in orders {
        reorder(t, &field, &order);
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_keyed_list(
    mut live: Vec<Value>,
    patch: &[Value],
    key: &str,
) -> Result<Vec<Value>, String> {
    for item in patch {
        let Some(id) = item.get(key) else {
            return Err(format!(
                "map: {item} does not contain declared merge key: {key}"
            ));
        };
        let pos = live.iter().position(|l| l.get(key) == Some(id));
        let directive = item.get("$patch").and_then(Value::as_str);
        match (pos, directive) {
            (Some(i), Some("delete")) => {
                live.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_merge_patch(&mut live[i], item)?,
            (None, _) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge_patch(&mut fresh, item)?;
                live.push(fresh);
            }
        }
    }
    Ok(live)
}

/// Applies `$setElementOrder`: listed elements first in the given order, the rest after.
fn reorder(t: &mut Map<String, Value>, field: &str, order: &[Value]) {
    let Some(Value::Array(list)) = t.get_mut(field) else {
        return;
    };
    let sample: Vec<&Value> = order.iter().collect();
    let key = merge_key(field, &sample);
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut rest = std::mem::take(list);
    let mut out = Vec::with_capacity(rest.len());
    for o in order {
        let want = ident(o);
        if let Some(i) = rest.iter().position(|v| ident(v) == want) {
            out.push(rest.remove(i));
        }
    }
    out.extend(rest);
    *list = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_nulls_and_replaces_lists() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "add", "path": "/metadata~1x", "value": true},
                {"op": "remove", "path": "/a/0"},
                {"op": "test", "path": "/b/c", "value": 2}
            ]),
        )
        .unwrap();
        assert_eq!(t, json!({"a": [2, 3], "b": {"c": 2}, "metadata/x": true}));
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/zz"}])).is_err());
    }

    #[test]
    fn smp_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}]}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"containers": [
                {"name": "b", "image": "b:2"},
                {"name": "a", "ports": [{"containerPort": 81}]},
                {"name": "c", "image": "c:1"}],
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}, {"containerPort": 81}]},
                {"name": "b", "image": "b:2"},
                {"name": "c", "image": "c:1"}]}})
        );
    }

    #[test]
    fn smp_directives() {
        let mut t = json!({"spec": {"ports": [{"port": 1}, {"port": 2}], "finalizers": ["x", "y"], "m": {"a": 1}}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"ports": [{"port": 1, "$patch": "delete"}],
                    "$deleteFromPrimitiveList/finalizers": ["x"],
                    "m": {"$patch": "replace", "b": 2}}}),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"spec": {"ports": [{"port": 2}], "finalizers": ["y"], "m": {"b": 2}}})
        );
    }

    #[test]
    fn rollout_restart_patch_adds_template_annotation() {
        let mut t = json!({"spec": {"template": {"metadata": {"labels": {"app": "x"}}}}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}),
        )
        .unwrap();
        assert_eq!(t["spec"]["template"]["metadata"]["labels"]["app"], "x");
        assert_eq!(
            t["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "now"
        );
    }
}
