//! Field ownership (`managedFields`) and server-side apply merging.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::patch::merge_key;

/// One owned field: segments `f:<field>` or `k:{"<key>":<value>}` (list element by merge key).
pub type FieldPath = Vec<String>;

/// What the sim treats as one field set: the object minus identity/system metadata, and minus
/// `status` when status is a subresource (or only `status` when writing that subresource).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource.
    Main {
        /// Leave `status` out (it is written through its own subresource).
        skip_status: bool,
    },
    /// The `/status` subresource.
    Status,
}

const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The leaf fields set in `obj`.
pub fn field_set(obj: &Value, builtin: bool, scope: Scope) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let keep = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Status, k) => k == "status",
            (Scope::Main { skip_status }, "status") => !skip_status,
            _ => true,
        };
        if !keep {
            continue;
        }
        let mut path = vec![format!("f:{k}")];
        if k == "metadata" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m {
                    if SYSTEM_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    path.push(format!("f:{mk}"));
                    collect(mv, mk, builtin, &mut path, &mut out);
                    path.pop();
                }
            }
            continue;
        }
        collect(v, k, builtin, &mut path, &mut out);
    }
    out
}

fn keyed_list_key(field: &str, items: &[Value], builtin: bool) -> Option<&'static str> {
    if !builtin || items.is_empty() {
        return None;
    }
    let sample: Vec<&Value> = items.iter().collect();
    let key = merge_key(field, &sample)?;
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

fn element_segment(key: &str, item: &Value) -> String {
    format!(
        "k:{}",
        json!({ key: item.get(key).cloned().unwrap_or(Value::Null) })
    )
}

fn collect(
    v: &Value,
    field: &str,
    builtin: bool,
    path: &mut FieldPath,
    out: &mut BTreeSet<FieldPath>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                collect(child, k, builtin, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(key) = keyed_list_key(field, items, builtin) {
                for item in items {
                    path.push(element_segment(key, item));
                    if let Some(m) = item.as_object() {
                        for (k, child) in m {
                            path.push(format!("f:{k}"));
                            collect(child, k, builtin, path, out);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            } else {
                out.insert(path.clone());
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a field path.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn parse_key(seg: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
    let (k, id) = v.as_object()?.iter().next()?;
    Some((k.clone(), id.clone()))
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        return cur.get(f);
    }
    let (k, id) = parse_key(seg)?;
    cur.as_array()?.iter().find(|i| i.get(&k) == Some(&id))
}

/// Removes the field at `path`, dropping list elements left empty.
pub fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let Some(parent) = parents
        .iter()
        .try_fold(&mut *obj, |cur, seg| step_mut(cur, seg))
    else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:")
        && let Some(m) = parent.as_object_mut()
    {
        m.remove(f);
    }
    // Tidy up: a keyed element whose fields are all gone disappears with them.
    if parents.len() >= 2
        && parents[parents.len() - 1].starts_with("k:")
        && value_at(obj, parents).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    {
        let (elem, list_path) = parents.split_last().expect("len checked");
        if let (Some(Value::Array(list)), Some((k, id))) = (
            list_path
                .iter()
                .try_fold(&mut *obj, |cur, seg| step_mut(cur, seg)),
            parse_key(elem),
        ) {
            list.retain(|i| i.get(&k) != Some(&id));
        }
    }
}

fn step_mut<'a>(cur: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        return cur.get_mut(f);
    }
    let (k, id) = parse_key(seg)?;
    cur.as_array_mut()?
        .iter_mut()
        .find(|i| i.get(&k) == Some(&id))
}

/// Renders a field set as `fieldsV1`.
pub fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let is_elem = seg.starts_with("k:");
            let entry = cur
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let m = entry.as_object_mut().expect("fieldsV1 nodes are objects");
            if is_elem {
                m.entry(".").or_insert_with(|| Value::Object(Map::new()));
            }
            cur = m;
        }
    }
    Value::Object(root)
}

/// Parses `fieldsV1` back into a field set.
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let Some(m) = v.as_object() else {
            return;
        };
        for (k, child) in m {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            let is_leaf = child
                .as_object()
                .is_none_or(|c| c.keys().all(|ck| ck == "."));
            if is_leaf && !k.starts_with("k:") {
                out.insert(path.clone());
            } else {
                walk(child, path, out);
            }
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// `.spec.ports[port=80].name`: how conflict messages name a field.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some((k, id)) = parse_key(seg) {
            let _ = write!(s, "[{k}={id}]");
        }
    }
    s
}

/// One `managedFields` entry, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the manager used.
    pub api_version: String,
    /// `status` for the status subresource, else empty.
    pub subresource: String,
    /// Fields owned.
    pub fields: BTreeSet<FieldPath>,
    /// When the entry last changed.
    pub time: String,
}

/// Reads `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    Entry {
                        manager: s("manager"),
                        operation: s("operation"),
                        api_version: s("apiVersion"),
                        subresource: s("subresource"),
                        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                        time: s("time"),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata.managedFields`, dropping entries that own nothing.
pub fn set_entries(obj: &mut Value, list: &[Entry]) {
    let arr: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if arr.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

/// Who wrote, as what, at which apiVersion, through which subresource.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// The kind is built in (keyed lists merge) or custom (lists are atomic).
    pub builtin: bool,
    /// Which part of the object the write covers.
    pub scope: Scope,
    /// Timestamp for the entry.
    pub time: &'a str,
}

impl Writer<'_> {
    fn subresource(&self) -> &'static str {
        if self.scope == Scope::Status {
            "status"
        } else {
            ""
        }
    }
}

/// Records an `Update` (create, replace, non-apply patch): the writer takes the fields it
/// changed; fields that disappeared leave every manager.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut list = old.map(entries).unwrap_or_default();
    let now = field_set(new, w.builtin, w.scope);
    let changed: BTreeSet<FieldPath> = match old {
        None => now.clone(),
        Some(o) => now
            .iter()
            .filter(|p| value_at(o, p) != value_at(new, p))
            .cloned()
            .collect(),
    };
    let gone: BTreeSet<FieldPath> = match old {
        None => BTreeSet::new(),
        Some(o) => field_set(o, w.builtin, w.scope)
            .difference(&now)
            .cloned()
            .collect(),
    };
    if changed.is_empty() && gone.is_empty() {
        set_entries(new, &list);
        return;
    }
    for e in &mut list {
        e.fields
            .retain(|p| !changed.contains(p) && !gone.contains(p));
    }
    let sub = w.subresource();
    match list
        .iter_mut()
        .find(|e| e.manager == w.manager && e.operation == "Update" && e.subresource == sub)
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = w.time.to_string();
            e.api_version = w.api_version.to_string();
        }
        None => list.push(Entry {
            manager: w.manager.to_string(),
            operation: "Update".into(),
            api_version: w.api_version.to_string(),
            subresource: sub.to_string(),
            fields: changed,
            time: w.time.to_string(),
        }),
    }
    set_entries(new, &list);
}

/// Merges an applied configuration into the live object (maps recurse, keyed lists of built-in
/// kinds merge by key, everything else is replaced).
pub fn merge_applied(live: &mut Value, applied: &Value, field: &str, builtin: bool) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                match l.get_mut(k) {
                    Some(existing) => merge_applied(existing, v, k, builtin),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            let all: Vec<Value> = l.iter().chain(a.iter()).cloned().collect();
            if let Some(key) = keyed_list_key(field, &all, builtin) {
                for item in a {
                    match l.iter_mut().find(|x| x.get(key) == item.get(key)) {
                        Some(existing) => merge_applied(existing, item, field, builtin),
                        None => l.push(item.clone()),
                    }
                }
            } else {
                l.clone_from(a);
            }
        }
        (l, a) => l.clone_from(a),
    }
}

/// Server-side apply of `applied` onto `live` (None: the object is being created).
/// Returns the merged object with managedFields updated, or the conflicts
/// `(manager, apiVersion, field)` when `force` is false.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<(String, String, String)>> {
    let applied_set = field_set(applied, w.builtin, w.scope);
    let Some(live) = live else {
        let mut obj = applied.clone();
        let entry = Entry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.to_string(),
            subresource: w.subresource().to_string(),
            fields: applied_set,
            time: w.time.to_string(),
        };
        set_entries(&mut obj, &[entry]);
        return Ok(obj);
    };
    let mut list = entries(live);
    let mut conflicts = Vec::new();
    let mut taken: BTreeSet<FieldPath> = BTreeSet::new();
    for e in &list {
        if e.manager == w.manager {
            continue;
        }
        for p in e.fields.intersection(&applied_set) {
            if value_at(live, p) != value_at(applied, p) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), display_path(p)));
                taken.insert(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut merged = live.clone();
    merge_applied(&mut merged, applied, "", w.builtin);
    let sub = w.subresource();
    let previous: BTreeSet<FieldPath> = list
        .iter()
        .find(|e| e.manager == w.manager && e.operation == "Apply" && e.subresource == sub)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for e in &mut list {
        if e.manager != w.manager {
            e.fields.retain(|p| !taken.contains(p));
        }
    }
    // Fields this manager applied before but no longer does are removed, unless someone else owns them.
    for p in previous.difference(&applied_set) {
        let owned_elsewhere = list.iter().any(|e| {
            !(e.manager == w.manager && e.operation == "Apply" && e.subresource == sub)
                && e.fields.contains(p)
        });
        if !owned_elsewhere {
            remove_path(&mut merged, p);
        }
    }
    list.retain(|e| !(e.manager == w.manager && e.operation == "Apply" && e.subresource == sub));
    list.push(Entry {
        manager: w.manager.to_string(),
        operation: "Apply".into(),
        api_version: w.api_version.to_string(),
        subresource: sub.to_string(),
        fields: applied_set,
        time: w.time.to_string(),
    });
    set_entries(&mut merged, &list);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            builtin: true,
            scope: Scope::Main { skip_status: true },
            time: "t",
        }
    }

    #[test]
    fn fields_v1_round_trips_with_keyed_lists() {
        let obj = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "labels": {"app": "x"}},
            "spec": {"ports": [{"port": 80, "name": "http"}], "type": "ClusterIP"}});
        let set = field_set(&obj, true, Scope::Main { skip_status: true });
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:ports"]["k:{\"port\":80}"]["f:name"],
            json!({})
        );
        assert_eq!(from_fields_v1(&v1), set);
        assert!(!set.iter().any(|p| p[0] == "f:metadata" && p[1] == "f:name"));
    }

    #[test]
    fn apply_conflicts_with_other_manager_unless_forced() {
        let mut live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1"}});
        record_update(None, &mut live, &writer("kubectl-create"));
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "2"}});
        let err = apply(Some(&live), &applied, &writer("meshvm"), false).unwrap_err();
        assert_eq!(
            err,
            vec![("kubectl-create".into(), "v1".into(), ".data.a".into())]
        );
        let merged = apply(Some(&live), &applied, &writer("meshvm"), true).unwrap();
        assert_eq!(merged["data"]["a"], "2");
        let es = entries(&merged);
        assert_eq!(es.len(), 1, "kubectl-create lost its only field: {es:?}");
        assert_eq!(es[0].manager, "meshvm");
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let live = apply(None, &first, &writer("m"), false).unwrap();
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1"}});
        let merged = apply(Some(&live), &second, &writer("m"), false).unwrap();
        assert_eq!(merged["data"], json!({"a": "1"}));
    }

    #[test]
    fn same_value_is_shared_not_conflicting() {
        let mut live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "1"}});
        record_update(None, &mut live, &writer("other"));
        let merged = apply(Some(&live), &live.clone(), &writer("m"), false).unwrap();
        assert_eq!(entries(&merged).len(), 2);
    }
}
