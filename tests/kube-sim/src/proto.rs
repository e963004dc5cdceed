//! Decoding of the Kubernetes protobuf request bodies kubectl's typed clients send
//! (`kubectl create namespace|serviceaccount|secret|configmap|token|service|deployment`,
//! `kubectl auth can-i`, since 1.3x).
//!
//! Only the messages those commands write are known; a body with a non-empty field the tables do
//! not know is refused with 415 rather than silently stored without it.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::util;

// Go's protobuf encoding writes every non-pointer field, zero or not; the apiserver's JSON
// omits those zeros (`omitempty`). `Int`/`Bool` are such fields and their zeros are dropped;
// `PtrInt`/`PtrBool` are pointers in Go, present only when set, so their zeros are kept.
#[derive(Clone, Copy)]
enum F {
    Str,
    Bytes,
    Int,
    PtrInt,
    Bool,
    PtrBool,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    MapQuantity,
    IntOrString,
    Time,
    RepStr,
    RepMsg(&'static [Field]),
}

type Field = (u32, &'static str, F);

const OWNER_REF: &[Field] = &[
    (1, "kind", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
    (6, "controller", F::PtrBool),
    (7, "blockOwnerDeletion", F::PtrBool),
];
const OBJECT_META: &[Field] = &[
    (1, "name", F::Str),
    (2, "generateName", F::Str),
    (3, "namespace", F::Str),
    (4, "selfLink", F::Str),
    (5, "uid", F::Str),
    (6, "resourceVersion", F::Str),
    (7, "generation", F::Int),
    (8, "creationTimestamp", F::Time),
    (9, "deletionTimestamp", F::Time),
    (10, "deletionGracePeriodSeconds", F::PtrInt),
    (11, "labels", F::MapStr),
    (12, "annotations", F::MapStr),
    (13, "ownerReferences", F::RepMsg(OWNER_REF)),
    (14, "finalizers", F::RepStr),
];
const NAMESPACE_SPEC: &[Field] = &[(1, "finalizers", F::RepStr)];
const NAMESPACE: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(NAMESPACE_SPEC)),
    (3, "status", F::Msg(&[(1, "phase", F::Str)])),
];
const SECRET: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapBytes),
    (3, "type", F::Str),
    (4, "stringData", F::MapStr),
    (5, "immutable", F::PtrBool),
];
const CONFIG_MAP: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapStr),
    (3, "binaryData", F::MapBytes),
    (4, "immutable", F::PtrBool),
];
const OBJECT_REF: &[Field] = &[
    (1, "kind", F::Str),
    (2, "namespace", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
    (6, "resourceVersion", F::Str),
    (7, "fieldPath", F::Str),
];
const LOCAL_REF: &[Field] = &[(1, "name", F::Str)];
const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "secrets", F::RepMsg(OBJECT_REF)),
    (3, "imagePullSecrets", F::RepMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", F::PtrBool),
];
const BOUND_REF: &[Field] = &[
    (1, "kind", F::Str),
    (2, "apiVersion", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
];
const TOKEN_REQUEST: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "audiences", F::RepStr),
            (3, "boundObjectRef", F::Msg(BOUND_REF)),
            (4, "expirationSeconds", F::PtrInt),
        ]),
    ),
    (
        3,
        "status",
        F::Msg(&[(1, "token", F::Str), (2, "expirationTimestamp", F::Time)]),
    ),
];
const SERVICE_PORT: &[Field] = &[
    (1, "name", F::Str),
    (2, "protocol", F::Str),
    (3, "port", F::Int),
    (4, "targetPort", F::IntOrString),
    (5, "nodePort", F::Int),
    (6, "appProtocol", F::Str),
];
const SERVICE_SPEC: &[Field] = &[
    (1, "ports", F::RepMsg(SERVICE_PORT)),
    (2, "selector", F::MapStr),
    (3, "clusterIP", F::Str),
    (4, "type", F::Str),
    (5, "externalIPs", F::RepStr),
    (7, "sessionAffinity", F::Str),
    (8, "loadBalancerIP", F::Str),
    (9, "loadBalancerSourceRanges", F::RepStr),
    (10, "externalName", F::Str),
    (11, "externalTrafficPolicy", F::Str),
    (12, "healthCheckNodePort", F::Int),
    (13, "publishNotReadyAddresses", F::Bool),
    (17, "ipFamilyPolicy", F::Str),
    (18, "clusterIPs", F::RepStr),
    (19, "ipFamilies", F::RepStr),
    (20, "allocateLoadBalancerNodePorts", F::PtrBool),
    (21, "loadBalancerClass", F::Str),
    (22, "internalTrafficPolicy", F::Str),
];
const SERVICE: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(SERVICE_SPEC)),
    (3, "status", F::Msg(&[])),
];
const CONTAINER_PORT: &[Field] = &[
    (1, "name", F::Str),
    (2, "hostPort", F::Int),
    (3, "containerPort", F::Int),
    (4, "protocol", F::Str),
    (5, "hostIP", F::Str),
];
const ENV_VAR: &[Field] = &[(1, "name", F::Str), (2, "value", F::Str)];
const RESOURCES: &[Field] = &[
    (1, "limits", F::MapQuantity),
    (2, "requests", F::MapQuantity),
];
const CONTAINER: &[Field] = &[
    (1, "name", F::Str),
    (2, "image", F::Str),
    (3, "command", F::RepStr),
    (4, "args", F::RepStr),
    (5, "workingDir", F::Str),
    (6, "ports", F::RepMsg(CONTAINER_PORT)),
    (7, "env", F::RepMsg(ENV_VAR)),
    (8, "resources", F::Msg(RESOURCES)),
    (13, "terminationMessagePath", F::Str),
    (14, "imagePullPolicy", F::Str),
    (20, "terminationMessagePolicy", F::Str),
];
const POD_SPEC: &[Field] = &[
    (2, "containers", F::RepMsg(CONTAINER)),
    (3, "restartPolicy", F::Str),
    (4, "terminationGracePeriodSeconds", F::PtrInt),
    (6, "dnsPolicy", F::Str),
    (7, "nodeSelector", F::MapStr),
    (8, "serviceAccountName", F::Str),
    (9, "serviceAccount", F::Str),
    (10, "nodeName", F::Str),
    (11, "hostNetwork", F::Bool),
    (20, "initContainers", F::RepMsg(CONTAINER)),
];
const LABEL_SELECTOR: &[Field] = &[(1, "matchLabels", F::MapStr)];
const POD_TEMPLATE: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(POD_SPEC)),
];
const DEPLOYMENT_SPEC: &[Field] = &[
    (1, "replicas", F::PtrInt),
    (2, "selector", F::Msg(LABEL_SELECTOR)),
    (3, "template", F::Msg(POD_TEMPLATE)),
    (4, "strategy", F::Msg(&[(1, "type", F::Str)])),
    (5, "minReadySeconds", F::Int),
    (6, "revisionHistoryLimit", F::PtrInt),
    (7, "paused", F::Bool),
    (9, "progressDeadlineSeconds", F::PtrInt),
];
const DEPLOYMENT: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(DEPLOYMENT_SPEC)),
    (3, "status", F::Msg(&[])),
];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    (1, "namespace", F::Str),
    (2, "verb", F::Str),
    (3, "group", F::Str),
    (4, "version", F::Str),
    (5, "resource", F::Str),
    (6, "subresource", F::Str),
    (7, "name", F::Str),
];
const ACCESS_REVIEW: &[Field] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "resourceAttributes", F::Msg(RESOURCE_ATTRIBUTES)),
            (
                2,
                "nonResourceAttributes",
                F::Msg(&[(1, "path", F::Str), (2, "verb", F::Str)]),
            ),
        ]),
    ),
    (3, "status", F::Msg(&[])),
];
const TYPE_META: &[Field] = &[(1, "apiVersion", F::Str), (2, "kind", F::Str)];
const UNKNOWN: &[Field] = &[
    (1, "typeMeta", F::Msg(TYPE_META)),
    (2, "raw", F::Bytes),
    (3, "contentEncoding", F::Str),
    (4, "contentType", F::Str),
];

fn table(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "Service") => SERVICE,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => ACCESS_REVIEW,
        _ => return None,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        let end = self
            .at
            .checked_add(len)
            .filter(|e| *e <= self.b.len())
            .ok_or("truncated field")?;
        let b: &'a [u8] = self.b;
        let s = &b[self.at..end];
        self.at = end;
        Ok(s)
    }
}

/// One raw field: number and payload (varint value or bytes).
enum Raw<'a> {
    Varint(u64),
    Len(&'a [u8]),
}

fn fields(b: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, String> {
    let mut r = Reader { b, at: 0 };
    let mut out = Vec::new();
    while r.at < b.len() {
        let key = r.varint()?;
        let num = u32::try_from(key >> 3).map_err(|_| "field number overflow")?;
        match key & 7 {
            0 => out.push((num, Raw::Varint(r.varint()?))),
            2 => {
                let s = r.bytes()?;
                out.push((num, Raw::Len(s)));
            }
            1 => r.at += 8,
            5 => r.at += 4,
            w => return Err(format!("unsupported wire type {w}")),
        }
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

fn map_entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let mut key = String::new();
    let mut val: &[u8] = &[];
    for (n, raw) in fields(b)? {
        match (n, raw) {
            (1, Raw::Len(k)) => key = utf8(k)?,
            (2, Raw::Len(v)) => val = v,
            _ => {}
        }
    }
    Ok((key, val))
}

#[allow(clippy::many_single_char_names)]
fn decode_msg(b: &[u8], table: &[Field], path: &str) -> Result<Value, String> {
    let mut out = Map::new();
    for (n, raw) in fields(b)? {
        let Some((_, name, kind)) = table.iter().find(|(num, _, _)| *num == n) else {
            let empty = match raw {
                Raw::Varint(v) => v == 0,
                Raw::Len(s) => s.is_empty(),
            };
            if empty {
                continue;
            }
            return Err(format!(
                "kube-sim cannot decode protobuf field {n} of {path}; send JSON (e.g. kubectl apply -f) instead"
            ));
        };
        let here = format!("{path}.{name}");
        match (*kind, raw) {
            (F::Str, Raw::Len(s)) => {
                if !s.is_empty() {
                    out.insert((*name).into(), json!(utf8(s)?));
                }
            }
            (F::Bytes, Raw::Len(s)) => {
                out.insert((*name).into(), json!(crate::store::b64(s)));
            }
            (F::Int | F::Bool, Raw::Varint(0)) => {}
            (F::Int | F::PtrInt, Raw::Varint(v)) => {
                out.insert((*name).into(), json!(v as i64));
            }
            (F::Bool | F::PtrBool, Raw::Varint(v)) => {
                out.insert((*name).into(), json!(v != 0));
            }
            (F::Msg(t), Raw::Len(s)) => {
                out.insert((*name).into(), decode_msg(s, t, &here)?);
            }
            (F::Time, Raw::Len(s)) => {
                let mut secs = 0i64;
                for (tn, tr) in fields(s)? {
                    if let (1, Raw::Varint(v)) = (tn, tr) {
                        secs = v as i64;
                    }
                }
                if secs != 0 {
                    out.insert((*name).into(), json!(util::rfc3339(secs)));
                }
            }
            (F::MapStr | F::MapBytes | F::MapQuantity, Raw::Len(s)) => {
                let (k, v) = map_entry(s)?;
                let value = match *kind {
                    F::MapStr => json!(utf8(v)?),
                    F::MapBytes => json!(crate::store::b64(v)),
                    _ => {
                        // resource.Quantity { string = 1 }
                        let mut q = String::new();
                        for (qn, qr) in fields(v)? {
                            if let (1, Raw::Len(qs)) = (qn, qr) {
                                q = utf8(qs)?;
                            }
                        }
                        json!(q)
                    }
                };
                out.entry(*name)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .ok_or("map field repeated as non-map")?
                    .insert(k, value);
            }
            (F::IntOrString, Raw::Len(s)) => {
                // intstr.IntOrString { type = 1; intVal = 2; strVal = 3 }
                let mut ty = 0;
                let mut iv = 0i64;
                let mut sv = String::new();
                for (f, r) in fields(s)? {
                    match (f, r) {
                        (1, Raw::Varint(v)) => ty = v,
                        (2, Raw::Varint(v)) => iv = v as i64,
                        (3, Raw::Len(x)) => sv = utf8(x)?,
                        _ => {}
                    }
                }
                out.insert((*name).into(), if ty == 1 { json!(sv) } else { json!(iv) });
            }
            (F::RepStr, Raw::Len(s)) => {
                let v = utf8(s)?;
                push(&mut out, name, json!(v))?;
            }
            (F::RepMsg(t), Raw::Len(s)) => {
                let v = decode_msg(s, t, &here)?;
                push(&mut out, name, v)?;
            }
            _ => return Err(format!("protobuf field {here} has an unexpected wire type")),
        }
    }
    Ok(Value::Object(out))
}

fn push(out: &mut Map<String, Value>, name: &str, v: Value) -> Result<(), String> {
    out.entry(name)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| format!("{name} repeated as non-list"))?
        .push(v);
    Ok(())
}

/// The magic prefix of Kubernetes protobuf envelopes.
pub const MAGIC: &[u8] = b"k8s\0";

/// Decodes a `application/vnd.kubernetes.protobuf` body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body lacks the k8s envelope prefix")?;
    let env = decode_msg(rest, UNKNOWN, "Unknown")?;
    let api_version = env
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = env
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let t = table(api_version, kind).ok_or_else(|| {
        format!("kube-sim cannot decode protobuf {kind} {api_version}; send it as JSON instead")
    })?;
    let raw = env
        .get("raw")
        .and_then(Value::as_str)
        .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let mut obj = decode_msg(&raw, t, kind)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(n: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(n) << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    #[test]
    fn decodes_a_secret_envelope() {
        let mut meta = Vec::new();
        len_field(1, b"s1", &mut meta);
        len_field(3, b"ns", &mut meta);
        let mut entry = Vec::new();
        len_field(1, b"k", &mut entry);
        len_field(2, b"hi", &mut entry);
        let mut secret = Vec::new();
        len_field(1, &meta, &mut secret);
        len_field(2, &entry, &mut secret);
        len_field(3, b"Opaque", &mut secret);
        let mut tm = Vec::new();
        len_field(1, b"v1", &mut tm);
        len_field(2, b"Secret", &mut tm);
        let mut env = MAGIC.to_vec();
        len_field(1, &tm, &mut env);
        len_field(2, &secret, &mut env);
        let v = decode(&env).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "s1", "namespace": "ns"}, "data": {"k": "aGk="}})
        );
    }

    #[test]
    fn unknown_non_empty_fields_are_refused() {
        let mut meta = Vec::new();
        len_field(99, b"x", &mut meta);
        assert!(
            decode_msg(&meta, OBJECT_META, "ObjectMeta")
                .unwrap_err()
                .contains("field 99")
        );
    }
}
