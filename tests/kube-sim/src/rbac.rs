//! RBAC as kube-apiserver evaluates it: request attributes parsed from the URL, rules from the
//! stored Roles, ClusterRoles, RoleBindings and ClusterRoleBindings, the privileged group
//! `system:masters`, and the bootstrap policy every cluster starts with.
//!
//! Sources (each rule is cited beside the code that models it):
//! - request attributes: apiserver@kubernetes-1.33.0 pkg/endpoints/request/requestinfo.go
//!   (the same logic at apiserver@kubernetes-1.14.0, lines given as "1.14: …");
//! - rule evaluation: kubernetes plugin/pkg/auth/authorizer/rbac/rbac.go (`RuleAllows`,
//!   `appliesTo`, `Authorize`) and pkg/apis/rbac/v1/evaluation_helpers.go (`VerbMatches`,
//!   `APIGroupMatches`, `ResourceMatches`, `ResourceNameMatches`, `NonResourceURLMatches`);
//! - bootstrap policy: kubernetes plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go
//!   (`clusterRoles`, `clusterRoleBindings`), stored snapshot kubernetes@53f1b9d6 (the
//!   kubernetes/kubernetes repository is too large to mirror here, so no release-tag line numbers);
//! - the privileged group: apiserver@kubernetes-1.33.0 pkg/authorization/authorizerfactory/builtin.go:90
//!   (`NewPrivilegedGroups`), which kube-apiserver puts first in its authorizer chain for
//!   `system:masters`.

use serde_json::{Value, json};

use crate::store::State;
use crate::util;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";
/// Storage key of Roles.
pub const ROLES: &str = "rbac.authorization.k8s.io/roles";
/// Storage key of ClusterRoles.
pub const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";
/// Storage key of RoleBindings.
pub const ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/rolebindings";
/// Storage key of ClusterRoleBindings.
pub const CLUSTER_ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/clusterrolebindings";

/// `user.SystemPrivilegedGroup`: always authorized.
pub const MASTERS: &str = "system:masters";
/// `user.AllAuthenticated`.
pub const AUTHENTICATED: &str = "system:authenticated";
/// `user.AllUnauthenticated`.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// `user.Anonymous`.
pub const ANONYMOUS: &str = "system:anonymous";

/// Who a request acts as, after authentication and impersonation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`kube-sim`, `auditor`, `system:serviceaccount:ns:sa`).
    pub name: String,
    /// Groups (`system:authenticated`, …).
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with these groups.
    pub fn new(name: &str, groups: &[&str]) -> Self {
        UserInfo {
            name: name.to_string(),
            groups: groups.iter().map(|g| (*g).to_string()).collect(),
        }
    }

    /// Is the user in `system:masters` (authorized for everything, RBAC not consulted)?
    pub fn privileged(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

/// The authorizer's view of a request (`authorizer.AttributesRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Kubernetes verb for resource requests; the lowercased HTTP method otherwise.
    pub verb: String,
    /// A resource request (`/api/v1/…`, `/apis/g/v/…` with a resource) or a path (`/apis`).
    pub resource_request: bool,
    /// API group.
    pub group: String,
    /// Resource (`secrets`).
    pub resource: String,
    /// Subresource (`token`, `scale`, `status`), "" for none.
    pub subresource: String,
    /// Namespace, "" for cluster scope.
    pub namespace: String,
    /// Object name, "" for collections (a list with `fieldSelector=metadata.name=x` has `x`).
    pub name: String,
    /// URL path (for non-resource requests).
    pub path: String,
}

impl Attributes {
    /// Attributes of a resource request.
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    /// Attributes of a non-resource request.
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    /// `resource` or `resource/subresource`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// `metadata.name` when a field selector requires exactly that name (`fields.Selector`'s
/// `RequiresExactMatch`: any `=`/`==` term on the field; `!=` does not count).
fn exact_name(field_selector: &str) -> Option<&str> {
    field_selector.split(',').find_map(|term| {
        if term.contains("!=") {
            return None;
        }
        let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
        (k.trim() == "metadata.name").then_some(v.trim())
    })
}

/// `path.IsValidPathSegmentName`: not `.`/`..`, no `/` or `%`.
fn valid_path_segment(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

/// The request's attributes as `RequestInfoFactory.NewRequestInfo` derives them from the URL
/// alone (apiserver@kubernetes-1.33.0 pkg/endpoints/request/requestinfo.go:118-278; 1.14: :103-246):
/// - fewer than 3 path segments, a prefix other than `api`/`apis`, or `/apis/{g}/{v}` itself is
///   a non-resource request whose verb is the lowercased method (:125-149);
/// - the verb from the method (`GET`/`HEAD` get, `POST` create, `PUT` update, `PATCH` patch,
///   `DELETE` delete; :170-186); `/namespaces/{ns}/…` sets the namespace, and the rest shifts to
///   the resource unless it is a namespace subresource (`status`, `finalize`; :191-206);
/// - a nameless `get` is `list`, or `watch` with `watch=` true; with a `fieldSelector` requiring
///   `metadata.name=x` the name is `x` (:223-254); a nameless `delete` is `deletecollection`
///   (:256-259).
pub fn request_attributes(
    method: &str,
    path: &str,
    watch: bool,
    field_selector: Option<&str>,
) -> Attributes {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let non_resource = || Attributes::non_resource(&method.to_ascii_lowercase(), path);
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return non_resource();
    }
    let mut rest = &parts[1..];
    let mut group = "";
    if parts[0] == "apis" {
        if rest.len() < 3 {
            return non_resource();
        }
        group = rest[0];
        rest = &rest[1..];
    }
    // rest[0] is the version.
    rest = &rest[1..];
    let mut verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_string();
    let mut namespace = "";
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1];
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let resource = rest.first().copied().unwrap_or("");
    let mut name = rest.get(1).copied().unwrap_or("").to_string();
    let subresource = rest.get(2).copied().unwrap_or("");
    if name.is_empty() && verb == "get" {
        verb = if watch { "watch" } else { "list" }.into();
        if let Some(n) = field_selector
            .and_then(exact_name)
            .filter(|n| valid_path_segment(n))
        {
            name = n.to_string();
        }
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection".into();
    }
    Attributes::resource(&verb, group, resource, subresource, namespace, &name)
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    util::strings(v.get(key))
}

/// `VerbMatches`, `APIGroupMatches`, `ResourceMatches` (`*`, exact `resource/subresource`, or
/// `*/subresource`), `ResourceNameMatches` (none listed: any name; else the exact name, so a
/// nameless list never matches), `NonResourceURLMatches` (`*`, exact, or a `prefix*`) —
/// kubernetes pkg/apis/rbac/v1/evaluation_helpers.go; `RuleAllows` combines them
/// (plugin/pkg/auth/authorizer/rbac/rbac.go).
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strings(rule, "verbs");
    if !verbs.iter().any(|v| v == "*" || *v == a.verb) {
        return false;
    }
    if !a.resource_request {
        return strings(rule, "nonResourceURLs").iter().any(|u| {
            u == "*"
                || *u == a.path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| a.path.starts_with(prefix))
        });
    }
    let groups = strings(rule, "apiGroups");
    if !groups.iter().any(|g| g == "*" || *g == a.group) {
        return false;
    }
    let combined = a.combined_resource();
    let resources = strings(rule, "resources");
    let resource_ok = resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty()
                && r.len() == a.subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(a.subresource.as_str()))
    });
    if !resource_ok {
        return false;
    }
    let names = strings(rule, "resourceNames");
    names.is_empty() || names.contains(&a.name)
}

/// `appliesTo` (rbac.go): a User subject by name, a Group by membership, a ServiceAccount by
/// `system:serviceaccount:<ns>:<name>` (its namespace defaulting to the RoleBinding's).
fn subject_applies(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let s = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or("");
    match s("kind") {
        "User" => s("name") == user.name,
        "Group" => user.groups.iter().any(|g| g == s("name")),
        "ServiceAccount" => {
            let ns = if s("namespace").is_empty() {
                binding_ns
            } else {
                s("namespace")
            };
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s("name"))
        }
        _ => false,
    }
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with the authorizer's reason (`RBAC: allowed by …`; empty for `system:masters`).
    Allow(String),
    /// Not allowed; the reason the 403 appends (`RBAC: role.rbac.authorization.k8s.io "x" not
    /// found`), empty when every referenced role exists.
    Deny(String),
}

impl Decision {
    /// Was the request allowed?
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// The rules a binding's roleRef points at, or the lister's NotFound text for a missing role
/// (`role.rbac.authorization.k8s.io "x" not found`; a ClusterRoleBinding may only name a
/// ClusterRole).
fn role_rules<'a>(
    st: &'a State,
    binding: &Value,
    binding_ns: &str,
) -> Result<(&'static str, &'a [Value]), String> {
    let kind = util::str_at(binding, &["roleRef", "kind"]).unwrap_or("");
    let name = util::str_at(binding, &["roleRef", "name"]).unwrap_or("");
    let (key, ns, label, singular) = match kind {
        "Role" if !binding_ns.is_empty() => (ROLES, binding_ns, "Role", "role"),
        "ClusterRole" => (CLUSTER_ROLES, "", "ClusterRole", "clusterrole"),
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    let role = st
        .get_obj(key, ns, name)
        .ok_or_else(|| format!("{singular}.{GROUP} {name:?} not found"))?;
    let rules = role
        .get("rules")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    Ok((label, rules))
}

/// The subject a binding matched, for the allow reason (`User "u"`, `Group "g"`).
fn describe_subject(subject: &Value, binding_ns: &str) -> String {
    let s = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or("");
    match s("kind") {
        "ServiceAccount" => {
            let ns = if s("namespace").is_empty() {
                binding_ns
            } else {
                s("namespace")
            };
            format!("ServiceAccount \"{}/{ns}\"", s("name"))
        }
        k => format!("{k} {:?}", s("name")),
    }
}

/// RBAC's `Authorize` (kubernetes plugin/pkg/auth/authorizer/rbac/rbac.go): `system:masters`
/// is allowed outright (the privileged-group authorizer ahead of RBAC); otherwise every
/// ClusterRoleBinding, then — for a namespaced request — every RoleBinding of that namespace,
/// whose subjects include the user is visited; the first rule that allows wins. Denied
/// requests carry `RBAC: <errors>` when a binding named a missing role (one error as is,
/// several as `[e1, e2]`, `utilerrors.NewAggregate`).
pub fn authorize(st: &State, user: &UserInfo, a: &Attributes) -> Decision {
    if user.privileged() {
        return Decision::Allow(String::new());
    }
    let mut errors: Vec<String> = Vec::new();
    let mut visit = |binding: &Value, binding_ns: &str, binding_kind: &str| -> Option<String> {
        let subjects = binding
            .get("subjects")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let subject = subjects
            .iter()
            .find(|s| subject_applies(s, user, binding_ns))?;
        match role_rules(st, binding, binding_ns) {
            Err(e) => {
                errors.push(e);
                None
            }
            Ok((role_kind, rules)) => rules.iter().any(|r| rule_allows(r, a)).then(|| {
                let name = util::name_of(binding);
                let binding_name = if binding_ns.is_empty() {
                    format!("{name:?}")
                } else {
                    format!("\"{name}/{binding_ns}\"")
                };
                format!(
                    "RBAC: allowed by {binding_kind} {binding_name} of {role_kind} {:?} to {}",
                    util::str_at(binding, &["roleRef", "name"]).unwrap_or(""),
                    describe_subject(subject, binding_ns)
                )
            }),
        }
    };
    for (_, b) in st.iter_resource(CLUSTER_ROLE_BINDINGS, None) {
        if let Some(reason) = visit(b, "", "ClusterRoleBinding") {
            return Decision::Allow(reason);
        }
    }
    if !a.namespace.is_empty() {
        for (_, b) in st.iter_resource(ROLE_BINDINGS, Some(&a.namespace)) {
            if let Some(reason) = visit(b, &a.namespace, "RoleBinding") {
                return Decision::Allow(reason);
            }
        }
    }
    Decision::Deny(match errors.as_slice() {
        [] => String::new(),
        [one] => format!("RBAC: {one}"),
        many => format!("RBAC: [{}]", many.join(", ")),
    })
}

/// The bootstrap ClusterRoles and ClusterRoleBindings kube-apiserver reconciles at start that
/// matter to clients (kubernetes plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go,
/// `clusterRoles()` and `clusterRoleBindings()`): `cluster-admin` (everything) bound to
/// `system:masters`; `system:discovery` (get on `/api`, `/api/*`, `/apis`, `/apis/*`,
/// `/openapi`, `/openapi/*`, `/version`, `/version/`, health) bound to `system:authenticated`;
/// `system:basic-user` (create `selfsubjectaccessreviews`, `selfsubjectrulesreviews`) bound to
/// `system:authenticated`; `system:public-info-viewer` (get on health and `/version`) bound to
/// `system:authenticated` and `system:unauthenticated`. Each carries the bootstrapping label and
/// the autoupdate annotation (`addDefaultMetadata`). The aggregated `admin`/`edit`/`view` and the
/// component roles are not modelled.
pub fn bootstrap_objects() -> Vec<Value> {
    let meta = |name: &str| {
        json!({"name": name,
               "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
               "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": meta(name), "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": meta(name),
               "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
               "subjects": subjects})
    };
    let health = ["/livez", "/readyz", "/healthz", "/version", "/version/"];
    let mut discovery: Vec<&str> = health.to_vec();
    discovery.extend([
        "/openapi",
        "/openapi/*",
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
    ]);
    vec![
        role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": discovery, "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": health, "verbs": ["get"]}]),
        ),
        binding("cluster-admin", &[MASTERS]),
        binding("system:discovery", &[AUTHENTICATED]),
        binding("system:basic-user", &[AUTHENTICATED]),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED, UNAUTHENTICATED],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_follow_request_info() {
        let a = request_attributes("GET", "/api/v1/namespaces/ns1/secrets", false, None);
        assert_eq!(
            a,
            Attributes::resource("list", "", "secrets", "", "ns1", "")
        );
        let a = request_attributes(
            "GET",
            "/api/v1/namespaces/ns1/secrets",
            true,
            Some("type=x,metadata.name=cacerts"),
        );
        assert_eq!(
            a,
            Attributes::resource("watch", "", "secrets", "", "ns1", "cacerts")
        );
        let a = request_attributes("GET", "/api/v1/secrets", false, Some("metadata.name!=x"));
        assert_eq!(a, Attributes::resource("list", "", "secrets", "", "", ""));
        let a = request_attributes(
            "POST",
            "/api/v1/namespaces/vm/serviceaccounts/app/token",
            false,
            None,
        );
        assert_eq!(
            a,
            Attributes::resource("create", "", "serviceaccounts", "token", "vm", "app")
        );
        // A namespace is its own namespace; its status is a subresource.
        let a = request_attributes("PUT", "/api/v1/namespaces/ns1/status", false, None);
        assert_eq!(
            a,
            Attributes::resource("update", "", "namespaces", "status", "ns1", "ns1")
        );
        let a = request_attributes(
            "DELETE",
            "/apis/apps/v1/namespaces/a/deployments",
            false,
            None,
        );
        assert_eq!(
            a,
            Attributes::resource("deletecollection", "apps", "deployments", "", "a", "")
        );
        for p in [
            "/api",
            "/api/v1",
            "/apis/apps/v1",
            "/openapi/v3/api/v1",
            "/version",
        ] {
            let a = request_attributes("GET", p, false, None);
            assert_eq!(a, Attributes::non_resource("get", p), "{p}");
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_names_and_urls() {
        let get = |r: &str, sub: &str, name: &str| {
            Attributes::resource("get", "apps", r, sub, "ns", name)
        };
        let rule = json!({"apiGroups": ["apps"], "resources": ["deployments", "*/scale"], "verbs": ["get"]});
        assert!(rule_allows(&rule, &get("deployments", "", "d")));
        assert!(rule_allows(&rule, &get("replicasets", "scale", "r")));
        assert!(!rule_allows(&rule, &get("deployments", "status", "d")));
        let named = json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["cacerts"], "verbs": ["get", "list"]});
        let secret =
            |verb: &str, name: &str| Attributes::resource(verb, "", "secrets", "", "ns", name);
        assert!(rule_allows(&named, &secret("get", "cacerts")));
        assert!(!rule_allows(&named, &secret("get", "other")));
        assert!(!rule_allows(&named, &secret("list", "")));
        let urls = json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]});
        assert!(rule_allows(
            &urls,
            &Attributes::non_resource("get", "/apis/apps/v1")
        ));
        assert!(rule_allows(
            &urls,
            &Attributes::non_resource("get", "/version")
        ));
        assert!(!rule_allows(
            &urls,
            &Attributes::non_resource("get", "/api")
        ));
        assert!(!rule_allows(
            &urls,
            &Attributes::non_resource("post", "/version")
        ));
    }

    #[test]
    fn bindings_grant_by_user_group_and_service_account() {
        let mut st = State::new(crate::cidr::Cidr::default());
        for o in bootstrap_objects() {
            st.upsert(o).unwrap();
        }
        st.upsert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}))
            .unwrap();
        st.upsert(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "read", "namespace": "a"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]}),
        )
        .unwrap();
        st.upsert(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "read", "namespace": "a"},
            "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "read"},
            "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "sa"}]}),
        )
        .unwrap();
        let u = UserInfo::new("u", &[AUTHENTICATED]);
        let list = |ns: &str| Attributes::resource("list", "", "secrets", "", ns, "");
        assert_eq!(
            authorize(&st, &u, &list("a")),
            Decision::Allow(
                "RBAC: allowed by RoleBinding \"read/a\" of Role \"read\" to User \"u\"".into()
            )
        );
        assert_eq!(
            authorize(&st, &u, &list("b")),
            Decision::Deny(String::new())
        );
        assert_eq!(authorize(&st, &u, &list("")), Decision::Deny(String::new()));
        let sa = UserInfo::new("system:serviceaccount:a:sa", &[AUTHENTICATED]);
        assert!(authorize(&st, &sa, &list("a")).allowed());
        assert!(authorize(&st, &u, &Attributes::non_resource("get", "/apis")).allowed());
        assert!(!authorize(&st, &u, &Attributes::non_resource("get", "/metrics")).allowed());
        assert!(authorize(&st, &UserInfo::new("x", &[MASTERS]), &list("")).allowed());
        // A binding to a missing role names it in the reason.
        st.upsert(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "gone", "namespace": "a"},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "gone"},
            "subjects": [{"kind": "User", "name": "u"}]}),
        )
        .unwrap();
        assert_eq!(
            authorize(
                &st,
                &u,
                &Attributes::resource("get", "", "pods", "", "a", "p")
            ),
            Decision::Deny("RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found".into())
        );
    }
}
