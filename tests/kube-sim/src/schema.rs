//! CustomResourceDefinitions: the embedded Istio CRD sets, and openAPIV3Schema validation and pruning as kube-apiserver does them.
//!
//! Validation follows kube-openapi's `SchemaValidator` (what apiextensions-apiserver runs on every
//! custom resource write) and words its errors as `kubeOpenAPIResultToFieldErrors` converts them:
//! same field paths (`spec.servers[0].port.number`), same reasons, same messages.
//!
//! Deliberately not implemented:
//! - `x-kubernetes-validations` (CEL). The modern Istio CRDs carry these rules, all skipped:
//!   `duration(self) >= duration('1ms')` on every duration field; `0 < self && self <= 65535` on
//!   port numbers; label-key rules (`self.all(key, size(key) < 63 && key.matches(...))`,
//!   `self.all(key, key.size() != 0)`, `self.all(key, !key.contains("*"))`); `!self.contains("*")`
//!   and `self != "*"` on hosts; the WorkloadEntry/ServiceEntry address rules (`unix://` sockets may
//!   not be directories nor carry ports, `has(self.address) || has(self.network)`, at most one of
//!   address/network); `self.all(l1, self.exists_one(l2, l1.number == l2.number))` (unique port
//!   numbers); `self in ["", "HTTP", "HTTPS"]` on probe schemes; and the PeerAuthentication rule
//!   that port-level mTLS needs a selector.
//! - `pattern` beyond the anchored single-character-class form (`^[-_A-Za-z0-9]+$`, the only form
//!   the embedded CRDs use): other patterns are not checked.
//! - string `format`s other than `byte` (base64) are not checked (kube-apiserver also checks
//!   `date-time`, `uuid`, ...; no embedded CRD puts them on a field a client writes).
//!
//! One deliberate strictness: integers are range-checked against `format: int32`/`int64`
//! (kube-apiserver leaves that to the storage decoder), so the sim refuses a value that could
//! never round-trip through Istio's protobuf types.

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Map, Value};

/// The facts about one CRD that the server needs to serve its resource.
#[derive(Debug, Clone, PartialEq)]
pub struct CrdInfo {
    /// API group, e.g. `networking.istio.io`.
    pub group: String,
    /// Kind, e.g. `DestinationRule`.
    pub kind: String,
    /// List kind, e.g. `DestinationRuleList` (defaulted to `<kind>List` as the apiserver does).
    pub list_kind: String,
    /// Plural resource name, e.g. `destinationrules`.
    pub plural: String,
    /// Singular resource name (defaulted to the lower-cased kind as the apiserver does).
    pub singular: String,
    /// Short names such as `dr`.
    pub short_names: Vec<String>,
    /// Categories such as `istio-io`.
    pub categories: Vec<String>,
    /// True for `scope: Namespaced`, false for `scope: Cluster`.
    pub namespaced: bool,
    /// The versions, in the order the CRD lists them.
    pub versions: Vec<CrdVersion>,
}

/// One version of a CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct CrdVersion {
    /// Version name, e.g. `v1alpha3`.
    pub name: String,
    /// Whether the version is served.
    pub served: bool,
    /// Whether this is the storage version.
    pub storage: bool,
    /// The `openAPIV3Schema` to validate and prune with. For a CRD that keeps unknown fields
    /// (v1beta1 with `preserveUnknownFields` unset or true, as all Istio 1.4 CRDs, or its v1 form
    /// from [`to_v1_crd`]), every object node carries `x-kubernetes-preserve-unknown-fields: true`,
    /// so [`prune`] keeps everything, as kube-apiserver does for such CRDs.
    pub schema: Option<Value>,
}

/// One validation failure, as kube-apiserver reports it in a 422 `Status` cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `spec.trafficPolicy.tls.mode` (`<nil>` for oneOf/anyOf/allOf/not failures, as kube-apiserver reports them).
    pub path: String,
    /// Cause type, e.g. `FieldValueNotSupported`, `FieldValueTypeInvalid`, `FieldValueRequired`.
    pub reason: String,
    /// The message without the path, e.g. `Unsupported value: "BOGUS": supported values: "DISABLE", "SIMPLE"`.
    pub message: String,
}

impl fmt::Display for FieldError {
    /// `path: message`, the form kube-apiserver joins into a Status message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

const MODERN_FILES: &[&str] = &[
    include_str!("../crds/modern/destinationrules.networking.istio.io.yaml"),
    include_str!("../crds/modern/gateways.networking.istio.io.yaml"),
    include_str!("../crds/modern/peerauthentications.security.istio.io.yaml"),
    include_str!("../crds/modern/serviceentries.networking.istio.io.yaml"),
    include_str!("../crds/modern/virtualservices.networking.istio.io.yaml"),
    include_str!("../crds/modern/workloadentries.networking.istio.io.yaml"),
    include_str!("../crds/modern/workloadgroups.networking.istio.io.yaml"),
];

/// Istio 1.4.2's install CRDs, the three files as istio-init ships them (apiextensions v1beta1).
const ISTIO_1_4_FILES: &[&str] = &[
    include_str!("../crds/istio-1.4/crd-10.yaml"),
    include_str!("../crds/istio-1.4/crd-11.yaml"),
    include_str!("../crds/istio-1.4/crd-14.yaml"),
];

const ISTIO_1_8_FILES: &[&str] = &[
    include_str!("../crds/istio-1.8/destinationrules.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.8/gateways.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.8/peerauthentications.security.istio.io.yaml"),
    include_str!("../crds/istio-1.8/serviceentries.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.8/virtualservices.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.8/workloadentries.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.8/workloadgroups.networking.istio.io.yaml"),
];

const ISTIO_1_12_FILES: &[&str] = &[
    include_str!("../crds/istio-1.12/destinationrules.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.12/gateways.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.12/peerauthentications.security.istio.io.yaml"),
    include_str!("../crds/istio-1.12/serviceentries.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.12/virtualservices.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.12/workloadentries.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.12/workloadgroups.networking.istio.io.yaml"),
];

const ISTIO_1_13_FILES: &[&str] = &[
    include_str!("../crds/istio-1.13/destinationrules.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.13/gateways.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.13/peerauthentications.security.istio.io.yaml"),
    include_str!("../crds/istio-1.13/serviceentries.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.13/virtualservices.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.13/workloadentries.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.13/workloadgroups.networking.istio.io.yaml"),
];

const ISTIO_1_22_FILES: &[&str] = &[
    include_str!("../crds/istio-1.22/destinationrules.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.22/gateways.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.22/peerauthentications.security.istio.io.yaml"),
    include_str!("../crds/istio-1.22/serviceentries.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.22/virtualservices.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.22/workloadentries.networking.istio.io.yaml"),
    include_str!("../crds/istio-1.22/workloadgroups.networking.istio.io.yaml"),
];

/// The embedded CRD sets, oldest first: `istio-1.4` (1.4.2, apiextensions v1beta1),
/// `istio-1.8` (v1beta1), `istio-1.12`, `istio-1.13`, `istio-1.22` (v1), and `modern` (the
/// current release, v1). See crds/PROVENANCE.md.
pub const CRD_SETS: &[&str] = &[
    "istio-1.4",
    "istio-1.8",
    "istio-1.12",
    "istio-1.13",
    "istio-1.22",
    "modern",
];

/// The set for an Istio release: its own where the sim ships one, else the nearest older one
/// (1.5–1.11 → istio-1.8, 1.14–1.21 → istio-1.13, 1.23 → istio-1.22), and `modern` from 1.24.
pub fn crd_set_for_release(r: crate::controllers::Release) -> &'static str {
    use crate::controllers::Release as R;
    if r < R(1, 5) {
        "istio-1.4"
    } else if r < R(1, 12) {
        "istio-1.8"
    } else if r < R(1, 13) {
        "istio-1.12"
    } else if r < R(1, 22) {
        "istio-1.13"
    } else if r < R(1, 24) {
        "istio-1.22"
    } else {
        "modern"
    }
}

/// Whether a set's CRDs are apiextensions.k8s.io/v1beta1 (Istio 1.4 and 1.8).
pub fn crd_set_is_v1beta1(name: &str) -> bool {
    matches!(name, "istio-1.4" | "istio-1.8")
}

/// The embedded Istio CRDs of a set (see [`CRD_SETS`]); `None` for any other name.
pub fn crd_set(name: &str) -> Option<Vec<Value>> {
    static SETS: [OnceLock<Vec<Value>>; 6] = [const { OnceLock::new() }; 6];
    let index = CRD_SETS.iter().position(|s| *s == name)?;
    let files = match name {
        "istio-1.4" => ISTIO_1_4_FILES,
        "istio-1.8" => ISTIO_1_8_FILES,
        "istio-1.12" => ISTIO_1_12_FILES,
        "istio-1.13" => ISTIO_1_13_FILES,
        "istio-1.22" => ISTIO_1_22_FILES,
        _ => MODERN_FILES,
    };
    Some(
        SETS[index]
            .get_or_init(|| files.iter().flat_map(|text| parse_embedded(text)).collect())
            .clone(),
    )
}

fn parse_embedded(text: &str) -> Vec<Value> {
    // The files are compiled in and covered by tests, so a failure here is a build defect.
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).expect("embedded CRD YAML parses");
    docs.into_iter().filter(Value::is_object).collect()
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn strings_at(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

enum CrdApi {
    V1,
    V1beta1,
}

fn crd_api(crd: &Value) -> Result<CrdApi, String> {
    if str_at(crd, "kind") != Some("CustomResourceDefinition") {
        return Err(format!(
            "object of kind {:?} is not a CustomResourceDefinition",
            str_at(crd, "kind").unwrap_or("")
        ));
    }
    match str_at(crd, "apiVersion") {
        Some("apiextensions.k8s.io/v1") => Ok(CrdApi::V1),
        Some("apiextensions.k8s.io/v1beta1") => Ok(CrdApi::V1beta1),
        other => Err(format!(
            "CustomResourceDefinition apiVersion {:?} is not supported: use apiextensions.k8s.io/v1 or v1beta1",
            other.unwrap_or("")
        )),
    }
}

/// Reads a CRD in `apiextensions.k8s.io/v1` or `v1beta1` form (Istio 1.4's: top-level
/// `spec.validation` and `spec.version`/`spec.versions`), applying the apiserver's defaults.
pub fn parse_crd(crd: &Value) -> Result<CrdInfo, String> {
    let api = crd_api(crd)?;
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or("CustomResourceDefinition has no metadata.name")?;
    let spec = crd
        .get("spec")
        .filter(|s| s.is_object())
        .ok_or_else(|| format!("CustomResourceDefinition {name}: spec is missing"))?;
    let group = str_at(spec, "group")
        .filter(|g| !g.is_empty())
        .ok_or_else(|| format!("CustomResourceDefinition {name}: spec.group is missing"))?;
    let names = spec
        .get("names")
        .ok_or_else(|| format!("CustomResourceDefinition {name}: spec.names is missing"))?;
    let kind = str_at(names, "kind")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("CustomResourceDefinition {name}: spec.names.kind is missing"))?;
    let plural = str_at(names, "plural")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("CustomResourceDefinition {name}: spec.names.plural is missing"))?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "CustomResourceDefinition {name}: metadata.name must be spec.names.plural + \".\" + spec.group ({plural}.{group})"
        ));
    }
    let namespaced = match str_at(spec, "scope") {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
                "CustomResourceDefinition {name}: spec.scope {:?} must be Namespaced or Cluster",
                other.unwrap_or("")
            ));
        }
    };

    let versions = match api {
        CrdApi::V1 => v1_versions(name, spec)?,
        CrdApi::V1beta1 => v1beta1_versions(name, spec)?,
    };
    if versions.is_empty() {
        return Err(format!(
            "CustomResourceDefinition {name}: spec.versions must name at least one version"
        ));
    }
    let storage = versions.iter().filter(|v| v.storage).count();
    if storage != 1 {
        return Err(format!(
            "CustomResourceDefinition {name}: exactly one version must be the storage version, found {storage}"
        ));
    }

    Ok(CrdInfo {
        group: group.to_owned(),
        kind: kind.to_owned(),
        list_kind: str_at(names, "listKind").map_or_else(|| format!("{kind}List"), str::to_owned),
        plural: plural.to_owned(),
        singular: str_at(names, "singular").map_or_else(|| kind.to_lowercase(), str::to_owned),
        short_names: strings_at(names, "shortNames"),
        categories: strings_at(names, "categories"),
        namespaced,
        versions,
    })
}

fn v1_versions(name: &str, spec: &Value) -> Result<Vec<CrdVersion>, String> {
    let list = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("CustomResourceDefinition {name}: spec.versions is missing"))?;
    // Only a CRD converted from v1beta1 may say true here; it keeps every unknown field.
    let keep_unknown = spec.get("preserveUnknownFields").and_then(Value::as_bool) == Some(true);
    list.iter()
        .map(|v| {
            let mut schema = v.pointer("/schema/openAPIV3Schema").cloned();
            if keep_unknown && let Some(s) = schema.as_mut() {
                preserve_everywhere(s);
            }
            Ok(CrdVersion {
                name: version_name(name, v)?,
                served: v.get("served").and_then(Value::as_bool).unwrap_or(false),
                storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
                schema,
            })
        })
        .collect()
}

fn version_name(crd: &str, v: &Value) -> Result<String, String> {
    str_at(v, "name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("CustomResourceDefinition {crd}: a version has no name"))
}

fn v1beta1_versions(name: &str, spec: &Value) -> Result<Vec<CrdVersion>, String> {
    let keep_unknown = spec
        .get("preserveUnknownFields")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let shared_schema = spec.pointer("/validation/openAPIV3Schema");
    let schema_for = |v: &Value| {
        let mut schema = v
            .pointer("/schema/openAPIV3Schema")
            .or(shared_schema)
            .cloned();
        if keep_unknown && let Some(s) = schema.as_mut() {
            preserve_everywhere(s);
        }
        schema
    };
    if let Some(list) = spec.get("versions").and_then(Value::as_array) {
        return list
            .iter()
            .map(|v| {
                Ok(CrdVersion {
                    name: version_name(name, v)?,
                    served: v.get("served").and_then(Value::as_bool).unwrap_or(false),
                    storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
                    schema: schema_for(v),
                })
            })
            .collect();
    }
    let version = str_at(spec, "version").ok_or_else(|| {
        format!("CustomResourceDefinition {name}: neither spec.version nor spec.versions is set")
    })?;
    Ok(vec![CrdVersion {
        name: version.to_owned(),
        served: true,
        storage: true,
        schema: schema_for(&Value::Null),
    }])
}

/// Marks every object node as keeping unknown fields: the v1beta1 `preserveUnknownFields: true`
/// behaviour (nothing is pruned) expressed in the schema that [`prune`] reads.
fn preserve_everywhere(schema: &mut Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    let is_object = node.get("type").and_then(Value::as_str) == Some("object")
        || node.contains_key("properties")
        || node.contains_key("additionalProperties");
    if is_object {
        node.insert(PRESERVE.to_owned(), Value::Bool(true));
    }
    if let Some(props) = node.get_mut("properties").and_then(Value::as_object_mut) {
        props.values_mut().for_each(preserve_everywhere);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get_mut(key) {
            preserve_everywhere(child);
        }
    }
}

const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";

/// Converts a v1beta1 CRD to the `apiextensions.k8s.io/v1` form kube-apiserver serves it in
/// (per-version schema, `jsonPath` printer columns, `preserveUnknownFields` kept); a v1 CRD is
/// returned unchanged.
pub fn to_v1_crd(crd: &Value) -> Result<Value, String> {
    let api = crd_api(crd)?;
    let info = parse_crd(crd)?;
    if matches!(api, CrdApi::V1) {
        return Ok(crd.clone());
    }
    let spec = &crd["spec"];
    let shared_schema = spec.pointer("/validation/openAPIV3Schema");
    let shared_subresources = spec.get("subresources");
    let shared_columns = spec.get("additionalPrinterColumns");
    let listed = spec.get("versions").and_then(Value::as_array);

    let versions: Vec<Value> = info
        .versions
        .iter()
        .map(|v| {
            let source = listed
                .and_then(|l| {
                    l.iter()
                        .find(|e| str_at(e, "name") == Some(v.name.as_str()))
                })
                .unwrap_or(&Value::Null);
            let mut out = Map::new();
            out.insert("name".into(), Value::String(v.name.clone()));
            out.insert("served".into(), Value::Bool(v.served));
            out.insert("storage".into(), Value::Bool(v.storage));
            if let Some(schema) = source.pointer("/schema/openAPIV3Schema").or(shared_schema) {
                out.insert(
                    "schema".into(),
                    serde_json::json!({ "openAPIV3Schema": schema }),
                );
            }
            if let Some(sub) = source.get("subresources").or(shared_subresources) {
                out.insert("subresources".into(), sub.clone());
            }
            if let Some(cols) = source
                .get("additionalPrinterColumns")
                .or(shared_columns)
                .and_then(Value::as_array)
            {
                out.insert(
                    "additionalPrinterColumns".into(),
                    Value::Array(cols.iter().map(v1_column).collect()),
                );
            }
            Value::Object(out)
        })
        .collect();

    let mut names = Map::new();
    names.insert("kind".into(), Value::String(info.kind.clone()));
    names.insert("listKind".into(), Value::String(info.list_kind.clone()));
    names.insert("plural".into(), Value::String(info.plural.clone()));
    names.insert("singular".into(), Value::String(info.singular.clone()));
    if !info.short_names.is_empty() {
        names.insert("shortNames".into(), serde_json::json!(info.short_names));
    }
    if !info.categories.is_empty() {
        names.insert("categories".into(), serde_json::json!(info.categories));
    }
    let preserve = spec
        .get("preserveUnknownFields")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    let mut out = Map::new();
    out.insert(
        "apiVersion".into(),
        Value::String("apiextensions.k8s.io/v1".into()),
    );
    out.insert(
        "kind".into(),
        Value::String("CustomResourceDefinition".into()),
    );
    out.insert(
        "metadata".into(),
        crd.get("metadata").cloned().unwrap_or(Value::Null),
    );
    let mut spec_out = Map::new();
    spec_out.insert("group".into(), Value::String(info.group.clone()));
    spec_out.insert("names".into(), Value::Object(names));
    spec_out.insert(
        "scope".into(),
        Value::String(
            if info.namespaced {
                "Namespaced"
            } else {
                "Cluster"
            }
            .into(),
        ),
    );
    spec_out.insert("versions".into(), Value::Array(versions));
    spec_out.insert(
        "conversion".into(),
        serde_json::json!({ "strategy": "None" }),
    );
    spec_out.insert("preserveUnknownFields".into(), Value::Bool(preserve));
    out.insert("spec".into(), Value::Object(spec_out));
    Ok(Value::Object(out))
}

/// v1beta1 printer columns spell `JSONPath`; v1 spells `jsonPath`.
fn v1_column(col: &Value) -> Value {
    let mut out = col.as_object().cloned().unwrap_or_default();
    if let Some(path) = out.remove("JSONPath") {
        out.insert("jsonPath".into(), path);
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Validates a whole custom resource (`apiVersion`, `kind` and `metadata` are left to the server)
/// against a version's `openAPIV3Schema`; empty when valid. Errors come in kube-openapi's order.
pub fn validate(schema: &Value, object: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(schema) = schema.as_object() {
        check(schema, object, "", &mut out);
    }
    out
}

/// The formats kube-apiserver keeps (`StripUnsupportedFormatsPostProcess` drops the rest, such as
/// Istio 1.4's `format: string`).
const SUPPORTED_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The `field.Path` string kube-apiserver reports: a nil path prints as `<nil>`.
fn field_path(name: &str) -> String {
    let trimmed = name.trim_start_matches('.');
    if trimmed.is_empty() {
        "<nil>".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Go's `%q`, which JSON string escaping matches for the text a manifest holds.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// How `field.Error` prints a bad value: strings quoted, numbers and booleans bare.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// Go's `%v` of a schema bound: integral values print without a fraction.
fn go_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e18 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn err(path: &str, reason: &str, message: String) -> FieldError {
    FieldError {
        path: field_path(path),
        reason: reason.to_owned(),
        message,
    }
}

fn invalid(name: &str, value: &Value, detail: &str) -> FieldError {
    err(
        name,
        "FieldValueInvalid",
        format!("Invalid value: {}: {detail}", go_value(value)),
    )
}

fn type_invalid(name: &str, expected: &str, actual: &str) -> FieldError {
    err(
        name,
        "FieldValueTypeInvalid",
        format!(
            "Invalid value: {}: {} in body must be of type {expected}: {}",
            go_quote(actual),
            field_path(name),
            go_quote(actual)
        ),
    )
}

/// oneOf/anyOf/allOf/not failures are plain errors in kube-openapi, reported on a nil path.
fn composite(detail: &str) -> FieldError {
    err(
        "",
        "FieldValueInvalid",
        format!("Invalid value: \"\": {detail}"),
    )
}

fn schema_types(s: &Map<String, Value>) -> Vec<&str> {
    if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return vec!["integer", "string"];
    }
    match s.get("type") {
        Some(Value::String(t)) if !t.is_empty() => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn number_f64(s: &Map<String, Value>, key: &str) -> Option<f64> {
    s.get(key).and_then(Value::as_f64)
}

fn number_u64(s: &Map<String, Value>, key: &str) -> Option<u64> {
    s.get(key).and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    })
}

fn flag(s: &Map<String, Value>, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool) == Some(true)
}

/// JSON type and Go-format of a decoded value, as kube-openapi's `schemaInfoForType` names them.
fn data_info(data: &Value) -> (&'static str, &'static str) {
    match data {
        Value::Null => ("null", ""),
        Value::Bool(_) => ("boolean", ""),
        Value::String(_) => ("string", ""),
        Value::Number(n) if n.is_i64() || n.is_u64() => ("integer", "int64"),
        Value::Number(_) => ("number", "float64"),
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
    }
}

fn check(s: &Map<String, Value>, data: &Value, path: &str, out: &mut Vec<FieldError>) {
    let types = schema_types(s);
    if data.is_null() {
        if !types.is_empty() && !flag(s, "nullable") {
            out.push(type_invalid(path, &types.join(","), "null"));
        }
        check_enum(s, data, path, out);
        return;
    }
    check_type(s, &types, data, path, out);
    check_junctors(s, data, path, out);
    match data {
        Value::String(text) => check_string(s, text, data, path, out),
        Value::Number(_) => check_number(s, data, path, out),
        Value::Array(items) => check_array(s, items, path, out),
        _ => {}
    }
    check_enum(s, data, path, out);
    if let Value::Object(map) = data {
        check_object(s, map, path, out);
    }
}

fn check_type(
    s: &Map<String, Value>,
    types: &[&str],
    data: &Value,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    let format = s
        .get("format")
        .and_then(Value::as_str)
        .filter(|f| SUPPORTED_FORMATS.contains(f))
        .unwrap_or("");
    if types.is_empty() && format.is_empty() {
        return;
    }
    let (sch_type, data_format) = data_info(data);
    let float_int = sch_type == "number"
        && data.as_f64().is_some_and(|f| f.fract() == 0.0)
        && types.contains(&"integer");
    let int_float = sch_type == "integer" && types.contains(&"number");
    let type_ok = types.contains(&sch_type) || float_int || int_float;
    let stringish = data.is_string() || data.is_array();
    if !(stringish || format.is_empty() || type_ok || data_format == format) {
        out.push(type_invalid(path, format, data_format));
        return;
    }
    let numeric = types.contains(&"number") || types.contains(&"integer");
    if !numeric && !format.is_empty() && stringish {
        return;
    }
    if !type_ok {
        out.push(type_invalid(path, &types.join(","), sch_type));
    }
}

fn subschemas<'a>(s: &'a Map<String, Value>, key: &str) -> Vec<&'a Map<String, Value>> {
    s.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

fn run(s: &Map<String, Value>, data: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    check(s, data, path, &mut out);
    out
}

/// kube-openapi keeps the failures of the alternative that matched best; the sim approximates
/// "best" as "fewest errors".
fn best_failure(results: Vec<Vec<FieldError>>) -> Vec<FieldError> {
    results.into_iter().min_by_key(Vec::len).unwrap_or_default()
}

fn check_junctors(s: &Map<String, Value>, data: &Value, path: &str, out: &mut Vec<FieldError>) {
    let any_of = subschemas(s, "anyOf");
    if !any_of.is_empty() {
        let results: Vec<_> = any_of.iter().map(|sub| run(sub, data, path)).collect();
        if !results.iter().any(Vec::is_empty) {
            out.push(composite(&format!(
                "{} must validate at least one schema (anyOf)",
                go_quote(path)
            )));
            out.extend(best_failure(results));
        }
    }
    let one_of = subschemas(s, "oneOf");
    if !one_of.is_empty() {
        let results: Vec<_> = one_of.iter().map(|sub| run(sub, data, path)).collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid != 1 {
            let detail = if valid == 0 {
                "Found none valid".to_owned()
            } else {
                format!("Found {valid} valid alternatives")
            };
            out.push(composite(&format!(
                "{} must validate one and only one schema (oneOf). {detail}",
                go_quote(path)
            )));
            if valid == 0 {
                out.extend(best_failure(results));
            }
        }
    }
    let all_of = subschemas(s, "allOf");
    if !all_of.is_empty() {
        let mut valid = 0;
        for sub in &all_of {
            let r = run(sub, data, path);
            if r.is_empty() {
                valid += 1;
            }
            out.extend(r);
        }
        if valid != all_of.len() {
            let none = if valid == 0 { ". None validated" } else { "" };
            out.push(composite(&format!(
                "{} must validate all the schemas (allOf){none}",
                go_quote(path)
            )));
        }
    }
    if let Some(not) = s.get("not").and_then(Value::as_object)
        && run(not, data, path).is_empty()
    {
        out.push(composite(&format!(
            "{} must not validate the schema (not)",
            go_quote(path)
        )));
    }
}

fn check_string(
    s: &Map<String, Value>,
    text: &str,
    data: &Value,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    let name = field_path(path);
    let len = text.chars().count() as u64;
    if let Some(max) = number_u64(s, "maxLength")
        && len > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        out.push(err(
            path,
            "FieldValueTooLong",
            format!("Too long: may not be more than {max} {unit}"),
        ));
    }
    if let Some(min) = number_u64(s, "minLength")
        && len < min
    {
        out.push(invalid(
            path,
            data,
            &format!("{name} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str)
        && simple_pattern_matches(pattern, text) == Some(false)
    {
        out.push(invalid(
            path,
            data,
            &format!("{name} in body should match '{pattern}'"),
        ));
    }
    if s.get("format").and_then(Value::as_str) == Some("byte")
        && base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_err()
    {
        out.push(err(
            path,
            "FieldValueTypeInvalid",
            format!(
                "Invalid value: {}: {name} in body must be of type byte: {}",
                go_quote(text),
                go_quote(text)
            ),
        ));
    }
}

/// Matches the anchored single-class patterns (`^[-_A-Za-z0-9]+$`, `^[a-z]*$`); `None` when the
/// pattern is of any other form and is therefore not checked.
fn simple_pattern_matches(pattern: &str, text: &str) -> Option<bool> {
    let body = pattern.strip_prefix("^[")?.strip_suffix('$')?;
    let (class, at_least_one) = if let Some(c) = body.strip_suffix("]+") {
        (c, true)
    } else {
        (body.strip_suffix("]*")?, false)
    };
    if class.starts_with('^') || class.contains('\\') || class.contains('[') {
        return None;
    }
    let chars: Vec<char> = class.chars().collect();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len() && chars[i + 1] == '-' {
            ranges.push((chars[i], chars[i + 2]));
            i += 3;
        } else {
            ranges.push((chars[i], chars[i]));
            i += 1;
        }
    }
    let ok = text
        .chars()
        .all(|c| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)));
    Some(ok && (!at_least_one || !text.is_empty()))
}

fn check_number(s: &Map<String, Value>, data: &Value, path: &str, out: &mut Vec<FieldError>) {
    let name = field_path(path);
    let Some(value) = data.as_f64() else {
        return;
    };
    if let Some(max) = number_f64(s, "maximum") {
        let exclusive = flag(s, "exclusiveMaximum");
        if value > max || (exclusive && value >= max) {
            let word = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(invalid(
                path,
                data,
                &format!("{name} in body should be {word} {}", go_number(max)),
            ));
        }
    }
    if let Some(min) = number_f64(s, "minimum") {
        let exclusive = flag(s, "exclusiveMinimum");
        if value < min || (exclusive && value <= min) {
            let word = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(invalid(
                path,
                data,
                &format!("{name} in body should be {word} {}", go_number(min)),
            ));
        }
    }
    if let Some(factor) = number_f64(s, "multipleOf")
        && factor > 0.0
        && (value / factor).fract() != 0.0
    {
        out.push(invalid(
            path,
            data,
            &format!(
                "{name} in body should be a multiple of {}",
                go_number(factor)
            ),
        ));
    }
    // The sim's one strictness beyond kube-apiserver: an int32 field must fit an int32.
    let bounds = match s.get("format").and_then(Value::as_str) {
        Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        Some("int64") => Some((i64::MIN as f64, i64::MAX as f64)),
        _ => None,
    };
    if let Some((lo, hi)) = bounds {
        if value > hi {
            out.push(invalid(
                path,
                data,
                &format!(
                    "{name} in body should be less than or equal to {}",
                    go_number(hi)
                ),
            ));
        } else if value < lo {
            out.push(invalid(
                path,
                data,
                &format!(
                    "{name} in body should be greater than or equal to {}",
                    go_number(lo)
                ),
            ));
        }
    }
}

fn check_array(s: &Map<String, Value>, items: &[Value], path: &str, out: &mut Vec<FieldError>) {
    if let Some(item_schema) = s.get("items").and_then(Value::as_object) {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), out);
        }
    }
    let name = field_path(path);
    let size = items.len() as u64;
    if let Some(min) = number_u64(s, "minItems")
        && size < min
    {
        out.push(invalid(
            path,
            &Value::from(size),
            &format!("{name} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = number_u64(s, "maxItems")
        && size > max
    {
        out.push(too_many(path, size, max));
    }
    if flag(s, "uniqueItems") {
        let duplicated = items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].contains(a));
        if duplicated {
            out.push(invalid(
                path,
                &Value::String(String::new()),
                &format!("{name} in body shouldn't contain duplicates"),
            ));
        }
    }
}

fn too_many(path: &str, actual: u64, max: u64) -> FieldError {
    let unit = if max == 1 { "item" } else { "items" };
    err(
        path,
        "FieldValueTooMany",
        format!("Too many: {actual}: must have at most {max} {unit}"),
    )
}

fn check_enum(s: &Map<String, Value>, data: &Value, path: &str, out: &mut Vec<FieldError>) {
    let Some(allowed) = s.get("enum").and_then(Value::as_array) else {
        return;
    };
    if allowed.is_empty() || allowed.iter().any(|a| enum_equal(a, data)) {
        return;
    }
    let values: Vec<String> = allowed
        .iter()
        .map(|a| match a {
            Value::String(v) => go_quote(v),
            other => go_quote(&other.to_string()),
        })
        .collect();
    let message = if values.is_empty() {
        format!("Unsupported value: {}", go_value(data))
    } else {
        format!(
            "Unsupported value: {}: supported values: {}",
            go_value(data),
            values.join(", ")
        )
    };
    out.push(err(path, "FieldValueNotSupported", message));
}

fn enum_equal(allowed: &Value, data: &Value) -> bool {
    match (allowed, data) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => allowed == data,
    }
}

fn check_object(
    s: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    let name = field_path(path);
    let keys = map.len() as u64;
    if let Some(min) = number_u64(s, "minProperties")
        && keys < min
    {
        out.push(invalid(
            path,
            &Value::from(keys),
            &format!("{name} in body should have at least {min} properties"),
        ));
        return;
    }
    if let Some(max) = number_u64(s, "maxProperties")
        && keys > max
    {
        out.push(too_many(path, keys, max));
        return;
    }
    let empty = Map::new();
    let props = s
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    match s.get("additionalProperties") {
        Some(Value::Bool(false)) => {
            for key in map.keys().filter(|k| !props.contains_key(*k)) {
                out.push(invalid(
                    path,
                    &Value::String(key.clone()),
                    &format!("{name}.{key} in body is a forbidden property"),
                ));
            }
        }
        Some(Value::Object(extra)) => {
            for (key, value) in map.iter().filter(|(k, _)| !props.contains_key(*k)) {
                check(extra, value, &child_path(path, key), out);
            }
        }
        _ => {}
    }
    for (key, prop) in props {
        if let (Some(value), Some(prop)) = (map.get(key), prop.as_object()) {
            check(prop, value, &child_path(path, key), out);
        }
    }
    for key in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(key) {
            out.push(err(
                &child_path(path, key),
                "FieldValueRequired",
                "Required value".to_owned(),
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------------------------

/// Removes the fields the schema does not declare, as kube-apiserver prunes structural schemas
/// (`apiVersion`, `kind`, `metadata` at the root are kept for the server; nodes with
/// `x-kubernetes-preserve-unknown-fields` keep theirs), and drops `null`s of declared fields that
/// are neither `nullable` nor defaulted, as kube-apiserver does before validating. Returns the
/// unknown-field paths, sorted, in the form `fieldValidation=Strict` reports them
/// (`spec.servers[0].bogus`); dropped nulls are not reported, as kube-apiserver does not.
pub fn prune(schema: &Value, object: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Some(schema) = schema.as_object() {
        prune_node(schema, object, "", true, &mut pruned);
    }
    pruned.sort();
    pruned
}

fn prune_node(
    s: &Map<String, Value>,
    data: &mut Value,
    path: &str,
    root: bool,
    pruned: &mut Vec<String>,
) {
    let preserve = flag(s, PRESERVE);
    match data {
        Value::Object(map) => {
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties");
            let mut remove = Vec::new();
            for (key, value) in map.iter_mut() {
                if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child = child_path(path, key);
                let declared = props
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_object)
                    .or_else(|| extra.and_then(Value::as_object));
                if let Some(sub) = declared {
                    if value.is_null() && !flag(sub, "nullable") && !sub.contains_key("default") {
                        // PruneNonNullableNullsWithoutDefaults: a null where null is not allowed
                        // is dropped silently, not reported as an unknown field.
                        remove.push(key.clone());
                    } else {
                        prune_node(sub, value, &child, false, pruned);
                    }
                } else if !(preserve || extra == Some(&Value::Bool(true))) {
                    remove.push(key.clone());
                    pruned.push(child);
                }
            }
            for key in remove {
                map.remove(&key);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items").and_then(Value::as_object) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item_schema, item, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    /// The served schema for `apiVersion`/`kind` in a CRD set, if the set serves that kind.
    fn schema_for(set: &[Value], api_version: &str, kind: &str) -> Option<Value> {
        let (group, version) = api_version.split_once('/')?;
        set.iter().find_map(|crd| {
            let info = parse_crd(crd).ok()?;
            if info.group != group || info.kind != kind {
                return None;
            }
            let v = info
                .versions
                .into_iter()
                .find(|v| v.name == version && v.served)?;
            v.schema
        })
    }

    fn modern(api_version: &str, kind: &str) -> Value {
        schema_for(&crd_set("modern").unwrap(), api_version, kind).expect("modern serves kind")
    }

    fn legacy(api_version: &str, kind: &str) -> Value {
        schema_for(&crd_set("istio-1.4").unwrap(), api_version, kind).expect("1.4 serves kind")
    }

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    fn dr(spec: &Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "DestinationRule",
            "metadata": {"name": "default", "namespace": "istio-system"},
            "spec": spec,
        })
    }

    fn by_name(set: &[Value], name: &str) -> CrdInfo {
        let crd = set
            .iter()
            .find(|c| c["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the set"));
        parse_crd(crd).unwrap()
    }

    /// (version, served, storage) of a CRD.
    fn versions(info: &CrdInfo) -> Vec<(&str, bool, bool)> {
        info.versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect()
    }

    #[test]
    fn embedded_sets_parse_with_apiserver_defaults() {
        let modern = crd_set("modern").unwrap();
        let legacy = crd_set("istio-1.4").unwrap();
        assert_eq!(modern.len(), 7);
        // Istio 1.4.2's crd-10 (21), crd-11 (sidecars) and crd-14 (authorizationpolicies).
        assert_eq!(legacy.len(), 23);
        assert!(crd_set("istio-1.5").is_none());
        for set in CRD_SETS {
            let crds = crd_set(set).unwrap();
            for crd in &crds {
                let info = parse_crd(crd).unwrap();
                // Mixer's adapter CRDs of 1.4 carry no validation; every other version has a schema.
                let schemaless = ["adapter", "instance", "template", "handler"];
                assert!(
                    info.versions.iter().all(|v| v.schema.is_some())
                        || schemaless.contains(&info.singular.as_str()),
                    "{set}: {}",
                    info.kind
                );
            }
            assert_eq!(
                crds.iter()
                    .any(|c| c["apiVersion"] == "apiextensions.k8s.io/v1beta1"),
                crd_set_is_v1beta1(set),
                "{set}"
            );
        }
        let dr = by_name(&legacy, "destinationrules.networking.istio.io");
        assert_eq!(
            (
                dr.kind.as_str(),
                dr.list_kind.as_str(),
                dr.singular.as_str()
            ),
            ("DestinationRule", "DestinationRuleList", "destinationrule")
        );
        assert_eq!(dr.short_names, ["dr"]);
        assert_eq!(versions(&dr), [("v1alpha3", true, true)]);
        // Gateway 1.4 has no listKind: defaulted as the apiserver does.
        let gw = by_name(&legacy, "gateways.networking.istio.io");
        assert_eq!(gw.list_kind, "GatewayList");
        let mesh_policy = by_name(&legacy, "meshpolicies.authentication.istio.io");
        assert_eq!(mesh_policy.kind, "MeshPolicy");
        assert!(!mesh_policy.namespaced);
        let modern_dr = by_name(&modern, "destinationrules.networking.istio.io");
        assert_eq!(
            versions(&modern_dr),
            [
                ("v1", true, true),
                ("v1alpha3", true, false),
                ("v1beta1", true, false)
            ]
        );
        // WorkloadGroup per release: v1alpha3 only in 1.8 and 1.12 (while the group's other
        // kinds serve v1beta1, which the group prefers), v1beta1 from 1.13, v1 in 1.22.
        let wg = |set: &str| {
            let info = by_name(&crd_set(set).unwrap(), "workloadgroups.networking.istio.io");
            versions(&info)
                .into_iter()
                .map(|(v, served, storage)| (v.to_owned(), served, storage))
                .collect::<Vec<_>>()
        };
        let own = |v: &[(&str, bool, bool)]| {
            v.iter()
                .map(|(n, a, b)| ((*n).to_owned(), *a, *b))
                .collect::<Vec<_>>()
        };
        assert_eq!(wg("istio-1.8"), own(&[("v1alpha3", true, true)]));
        assert_eq!(wg("istio-1.12"), own(&[("v1alpha3", true, true)]));
        assert_eq!(
            wg("istio-1.13"),
            own(&[("v1alpha3", true, true), ("v1beta1", true, false)])
        );
        assert_eq!(
            wg("istio-1.22"),
            own(&[
                ("v1", true, false),
                ("v1alpha3", true, false),
                ("v1beta1", true, true)
            ])
        );
        let gw_1_8 = by_name(
            &crd_set("istio-1.8").unwrap(),
            "gateways.networking.istio.io",
        );
        assert_eq!(
            versions(&gw_1_8),
            [("v1alpha3", true, true), ("v1beta1", true, false)]
        );
    }

    #[test]
    fn release_picks_its_crd_set() {
        use crate::controllers::Release as R;
        for (release, set) in [
            (R(1, 4), "istio-1.4"),
            (R(1, 8), "istio-1.8"),
            (R(1, 11), "istio-1.8"),
            (R(1, 12), "istio-1.12"),
            (R(1, 13), "istio-1.13"),
            (R(1, 21), "istio-1.13"),
            (R(1, 22), "istio-1.22"),
            (R(1, 24), "modern"),
            (R(1, 28), "modern"),
        ] {
            assert_eq!(crd_set_for_release(release), set, "{release}");
        }
    }

    #[test]
    fn parse_crd_refuses_malformed_definitions() {
        let mut crd = crd_set("modern").unwrap()[0].clone();
        crd["metadata"]["name"] = json!("wrong.networking.istio.io");
        assert!(
            parse_crd(&crd)
                .unwrap_err()
                .contains("metadata.name must be")
        );
        let mut crd = crd_set("modern").unwrap()[0].clone();
        crd["spec"]["versions"][1]["storage"] = json!(true);
        assert!(parse_crd(&crd).unwrap_err().contains("exactly one version"));
        assert!(parse_crd(&json!({"apiVersion": "v1", "kind": "ConfigMap"})).is_err());
        let mut crd = crd_set("istio-1.4").unwrap()[0].clone();
        crd["apiVersion"] = json!("apiextensions.k8s.io/v2");
        assert!(parse_crd(&crd).unwrap_err().contains("not supported"));
    }

    #[test]
    fn v1beta1_crd_is_served_in_v1_form() {
        let legacy: Vec<Value> = crd_set("istio-1.4")
            .unwrap()
            .into_iter()
            .filter(|c| c["metadata"]["name"] == "destinationrules.networking.istio.io")
            .collect();
        let v1 = to_v1_crd(&legacy[0]).unwrap();
        assert_eq!(v1["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(v1["spec"]["preserveUnknownFields"], true);
        let version = &v1["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha3");
        assert_eq!(version["storage"], true);
        assert_eq!(version["subresources"], json!({"status": {}}));
        assert_eq!(
            version["additionalPrinterColumns"][0]["jsonPath"],
            ".spec.host"
        );
        assert!(
            version["additionalPrinterColumns"][0]
                .get("JSONPath")
                .is_none()
        );
        assert_eq!(
            version["schema"]["openAPIV3Schema"],
            legacy[0]["spec"]["validation"]["openAPIV3Schema"]
        );
        assert_eq!(v1["spec"]["names"]["listKind"], "DestinationRuleList");
        // The v1 form describes the same resource, and still keeps unknown fields.
        let (a, b) = (parse_crd(&legacy[0]).unwrap(), parse_crd(&v1).unwrap());
        assert_eq!(a.versions, b.versions);
        assert_eq!(
            (a.group, a.kind, a.plural, a.namespaced),
            (b.group, b.kind, b.plural, b.namespaced)
        );
        // A v1 CRD is served as it is.
        let modern = crd_set("modern").unwrap();
        assert_eq!(to_v1_crd(&modern[1]).unwrap(), modern[1]);
    }

    #[test]
    fn bogus_tls_mode_is_refused_as_kube_apiserver_words_it() {
        let object = dr(&json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "BOGUS"}}}));
        for schema in [
            modern("networking.istio.io/v1alpha3", "DestinationRule"),
            legacy("networking.istio.io/v1alpha3", "DestinationRule"),
        ] {
            let errors = validate(&schema, &object);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].path, "spec.trafficPolicy.tls.mode");
            assert_eq!(errors[0].reason, "FieldValueNotSupported");
            assert!(errors[0].message.starts_with(
                "Unsupported value: \"BOGUS\": supported values: \"DISABLE\", \"SIMPLE\", \"MUTUAL\", \"ISTIO_MUTUAL\""
            ), "{}", errors[0].message);
        }
        let modern_errors = validate(
            &modern("networking.istio.io/v1", "DestinationRule"),
            &object,
        );
        assert_eq!(
            messages(&modern_errors),
            [
                "spec.trafficPolicy.tls.mode: Unsupported value: \"BOGUS\": supported values: \"DISABLE\", \"SIMPLE\", \"MUTUAL\", \"ISTIO_MUTUAL\""
            ]
        );
    }

    #[test]
    fn wrong_type_and_missing_required_are_reported_with_their_paths() {
        let schema = modern("networking.istio.io/v1", "DestinationRule");
        let object = dr(&json!({
            "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": "string"}}},
        }));
        let errors = validate(&schema, &object);
        assert_eq!(
            messages(&errors),
            [
                "spec.trafficPolicy.connectionPool.tcp.maxConnections: Invalid value: \"string\": spec.trafficPolicy.connectionPool.tcp.maxConnections in body must be of type integer: \"string\"",
                "spec.host: Required value",
            ]
        );
        assert_eq!(errors[0].reason, "FieldValueTypeInvalid");
        assert_eq!(errors[1].reason, "FieldValueRequired");
        // ServiceEntry requires spec at the root.
        let se = json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "x"}});
        assert_eq!(
            messages(&validate(
                &modern("networking.istio.io/v1", "ServiceEntry"),
                &se
            )),
            ["spec: Required value"]
        );
        // Array items carry their index; a port number is bounded.
        let gw = json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"},
            "spec": {"servers": [{"hosts": ["*"], "port": {"name": "tls", "number": "15443", "protocol": "TLS"}}]}});
        assert_eq!(
            messages(&validate(&modern("networking.istio.io/v1", "Gateway"), &gw)),
            [
                "spec.servers[0].port.number: Invalid value: \"string\": spec.servers[0].port.number in body must be of type integer: \"string\""
            ]
        );
    }

    #[test]
    fn one_of_alternatives_follow_kube_openapi() {
        let schema = modern("networking.istio.io/v1", "DestinationRule");
        let both = dr(&json!({"host": "r", "trafficPolicy": {"loadBalancer": {
            "simple": "ROUND_ROBIN", "consistentHash": {"useSourceIp": true}}}}));
        let errors = validate(&schema, &both);
        assert_eq!(
            messages(&errors),
            [
                "<nil>: Invalid value: \"\": \"spec.trafficPolicy.loadBalancer\" must validate one and only one schema (oneOf). Found 2 valid alternatives"
            ]
        );
        let one =
            dr(&json!({"host": "r", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}));
        assert!(validate(&schema, &one).is_empty());
        // Istio 1.4's loadBalancer must name exactly one of simple / consistentHash.
        let schema = legacy("networking.istio.io/v1alpha3", "DestinationRule");
        let none = dr(&json!({"host": "r", "trafficPolicy": {"loadBalancer": {}}}));
        let errors = messages(&validate(&schema, &none));
        assert_eq!(
            errors[0],
            "<nil>: Invalid value: \"\": \"spec.trafficPolicy.loadBalancer\" must validate one and only one schema (oneOf). Found none valid"
        );
        assert!(
            errors.contains(&"spec.trafficPolicy.loadBalancer.simple: Required value".to_owned()),
            "{errors:?}"
        );
    }

    #[test]
    fn keywords_on_small_schemas() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "port": {"type": "integer", "format": "int32", "maximum": 65535, "minimum": 1},
            "big": {"type": "integer", "format": "int32"},
            "name": {"type": "string", "maxLength": 3, "pattern": "^[-_A-Za-z0-9]+$"},
            "tags": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
            "opt": {"type": "string", "nullable": true},
            "req": {"type": "string"},
            "ios": {"x-kubernetes-int-or-string": true},
            "ratio": {"type": "number", "format": "double"},
            "flag": {"type": "integer", "format": "int32"},
            "body": {"type": "string", "format": "byte"},
            "labels": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
        }}}});
        let ok = json!({"spec": {"port": 8060, "name": "a_b", "tags": ["x"], "opt": null, "ios": "80%",
            "ratio": 1, "big": 3.0, "body": "aGk=", "labels": {"a": "b"}}});
        assert!(
            validate(&schema, &ok).is_empty(),
            "{:?}",
            validate(&schema, &ok)
        );
        let bad = json!({"spec": {"port": 70000, "big": 4_294_967_296_i64, "name": "a b c", "tags": ["x", "y"],
            "req": null, "ios": true, "flag": true, "body": "%%%", "labels": {"a": "b", "c": 1}}});
        assert_eq!(
            messages(&validate(&schema, &bad)),
            [
                "spec.big: Invalid value: 4294967296: spec.big in body should be less than or equal to 2147483647",
                "spec.body: Invalid value: \"%%%\": spec.body in body must be of type byte: \"%%%\"",
                "spec.flag: Invalid value: \"\": spec.flag in body must be of type int32: \"\"",
                "spec.ios: Invalid value: \"boolean\": spec.ios in body must be of type integer,string: \"boolean\"",
                "spec.labels: Too many: 2: must have at most 1 item",
                "spec.name: Too long: may not be more than 3 bytes",
                "spec.name: Invalid value: \"a b c\": spec.name in body should match '^[-_A-Za-z0-9]+$'",
                "spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535",
                "spec.req: Invalid value: \"null\": spec.req in body must be of type string: \"null\"",
                "spec.tags: Too many: 2: must have at most 1 item",
            ]
        );
        assert_eq!(simple_pattern_matches("^[a-z]*$", ""), Some(true));
        assert_eq!(simple_pattern_matches("^[a-z]+$", ""), Some(false));
        assert_eq!(simple_pattern_matches("^(a|b)$", "a"), None);
    }

    #[test]
    fn unknown_fields_are_pruned_in_structural_schemas_only() {
        let schema = modern("networking.istio.io/v1", "DestinationRule");
        let mut object = dr(&json!({"host": "r", "bogus": 1,
            "trafficPolicy": {"tls": {"mode": "DISABLE", "extra": true}},
            "subsets": [{"name": "v1", "labels": {"version": "v1"}, "nope": {}}]}));
        object["status"] = json!({"anything": {"goes": 1}});
        object["metadata"]["labels"] = json!({"a": "b"});
        let pruned = prune(&schema, &mut object);
        assert_eq!(
            pruned,
            [
                "spec.bogus",
                "spec.subsets[0].nope",
                "spec.trafficPolicy.tls.extra"
            ]
        );
        assert_eq!(
            object["spec"],
            json!({"host": "r", "trafficPolicy": {"tls": {"mode": "DISABLE"}}, "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})
        );
        assert_eq!(
            object["status"],
            json!({"anything": {"goes": 1}}),
            "status preserves unknown fields"
        );
        assert_eq!(object["metadata"]["labels"], json!({"a": "b"}));
        assert!(validate(&schema, &object).is_empty());
        // Istio 1.4 CRDs are v1beta1 with preserveUnknownFields defaulted to true: nothing is pruned.
        let schema = legacy("networking.istio.io/v1alpha3", "DestinationRule");
        let mut object = dr(
            &json!({"host": "r", "bogus": 1, "trafficPolicy": {"tls": {"mode": "DISABLE", "extra": true}}}),
        );
        let before = object.clone();
        assert!(prune(&schema, &mut object).is_empty());
        assert_eq!(object, before);
    }

    fn conformance_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
    }

    fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                yaml_files(&path, out);
            } else if path.extension().is_some_and(|x| x == "yaml") {
                out.push(path);
            }
        }
    }

    fn documents(path: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        docs.into_iter()
            .filter(|d| d.get("apiVersion").is_some() && d.get("kind").is_some())
            .collect()
    }

    /// Validates every Istio object in `files` against each set that serves its kind; returns
    /// (objects checked, failures).
    fn check_files(files: &[PathBuf]) -> (usize, Vec<String>) {
        let sets = [
            ("modern", crd_set("modern").unwrap()),
            ("istio-1.4", crd_set("istio-1.4").unwrap()),
        ];
        let mut checked = 0;
        let mut failures = Vec::new();
        for path in files {
            for doc in documents(path) {
                let api_version = doc["apiVersion"].as_str().unwrap_or_default();
                let kind = doc["kind"].as_str().unwrap_or_default();
                for (set_name, set) in &sets {
                    let Some(schema) = schema_for(set, api_version, kind) else {
                        continue;
                    };
                    checked += 1;
                    let mut pruned_doc = doc.clone();
                    let pruned = prune(&schema, &mut pruned_doc);
                    let errors = validate(&schema, &pruned_doc);
                    if !errors.is_empty() || !pruned.is_empty() {
                        failures.push(format!(
                            "{} {kind} {} against {set_name}: {:?} pruned {pruned:?}",
                            path.display(),
                            doc["metadata"]["name"],
                            messages(&errors)
                        ));
                    }
                }
            }
        }
        (checked, failures)
    }

    #[test]
    fn every_scenario_custom_resource_validates_against_its_crd_set() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut files = Vec::new();
        yaml_files(&dir, &mut files);
        assert!(files.len() >= 14, "scenario files: {files:?}");
        let mut custom = 0;
        let mut sets_seen = std::collections::BTreeSet::new();
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(
                text.starts_with(&format!("# {name}: ")),
                "{name} starts with a comment naming and explaining it"
            );
            // Every shipped file is a scenario with a header; a base declares its Kubernetes.
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(docs[0]["kind"], "Scenario", "{name} starts with a header");
            if docs[0].get("base").is_none() {
                assert!(
                    docs[0]["kubeVersion"].is_string(),
                    "{name} declares kubeVersion"
                );
            }
            for doc in &docs[1..] {
                assert!(
                    doc["apiVersion"].is_string()
                        && doc["kind"].is_string()
                        && doc["metadata"]["name"].is_string(),
                    "{name}: every document is a Kubernetes object: {doc}"
                );
                assert_ne!(
                    doc["kind"], "CustomResourceDefinition",
                    "{name}: the sim brings the CRDs"
                );
            }
            // What the sim loads: the overlay chain resolved, the set it picks.
            let scenario = crate::Scenario::from_files(&[path]).unwrap_or_else(|e| panic!("{e}"));
            let set = scenario
                .crd_set()
                .expect("every scenario uses an embedded set");
            sets_seen.insert(set.clone());
            let crds = crd_set(&set).unwrap();
            for doc in scenario.objects().iter().filter(|d| {
                d["apiVersion"]
                    .as_str()
                    .is_some_and(|a| a.contains(".istio.io/"))
            }) {
                let (api_version, kind) = (
                    doc["apiVersion"].as_str().unwrap(),
                    doc["kind"].as_str().unwrap(),
                );
                let schema = schema_for(&crds, api_version, kind).unwrap_or_else(|| {
                    panic!("{name}: {kind} {api_version} is not served by {set}")
                });
                custom += 1;
                let mut pruned_doc = doc.clone();
                let pruned = prune(&schema, &mut pruned_doc);
                assert!(
                    pruned.is_empty(),
                    "{name}: {kind} {} has unknown fields {pruned:?} for {set}",
                    doc["metadata"]["name"]
                );
                let errors = messages(&validate(&schema, &pruned_doc));
                assert!(
                    errors.is_empty(),
                    "{name}: {kind} {} against {set}: {errors:?}",
                    doc["metadata"]["name"]
                );
            }
        }
        assert_eq!(
            sets_seen.into_iter().collect::<Vec<_>>(),
            [
                "istio-1.12",
                "istio-1.13",
                "istio-1.22",
                "istio-1.4",
                "istio-1.8",
                "modern"
            ],
            "every CRD set is some scenario's"
        );
        assert!(custom >= 100, "only {custom} custom resources checked");
    }

    #[test]
    fn every_conformance_object_validates_against_its_crd_set() {
        let root = conformance_dir();
        let mut files = Vec::new();
        for sub in ["analyzers", "kiali", "mesh-expansion"] {
            yaml_files(&root.join(sub), &mut files);
        }
        let (checked, failures) = check_files(&files);
        assert!(
            checked >= 100,
            "only {checked} objects found under {}",
            root.display()
        );
        // The one real refusal: Istio 1.5's analyzer testdata writes a peer as `- mtls:` (null).
        // kube-apiserver drops a null of a non-nullable field before validating, leaving `{}`,
        // which fails the 1.4 Policy schema's "exactly one of mtls / jwt". Istio's analyzer tests
        // never send it to an apiserver.
        let expected = [
            "analyzers/istio-1.5-mtls/mtls-with-port.yaml Policy \"default\" against istio-1.4: [\"<nil>: Invalid value: \\\"\\\": \\\"spec.peers[0]\\\" must validate one and only one schema (oneOf). Found none valid\", \"spec.peers[0].mtls: Required value\"] pruned []",
        ];
        let root_prefix = format!("{}/", root.display());
        let failures: Vec<_> = failures
            .iter()
            .map(|f| f.replace(&root_prefix, ""))
            .collect();
        assert_eq!(failures, expected, "{}", failures.join("\n"));
    }
}
