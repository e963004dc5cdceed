//! The resource types the sim serves: built-in kinds plus those CRDs make servable.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::schema::CrdInfo;

/// The verbs of an ordinary read-write resource, as discovery lists them.
pub const RW_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One servable resource (a `group/plural`), with everything discovery and the handlers need.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, "" for core.
    pub group: String,
    /// Served versions, preferred first.
    pub versions: Vec<String>,
    /// Plural resource name (`secrets`).
    pub plural: String,
    /// Singular resource name (`secret`).
    pub singular: String,
    /// Kind (`Secret`).
    pub kind: String,
    /// List kind (`SecretList`).
    pub list_kind: String,
    /// Short names (`svc`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (then the main resource ignores status writes).
    pub status_subresource: bool,
    /// Built-in kinds accept strategic merge patches; custom resources answer 415.
    pub builtin: bool,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Verbs discovery lists; `["create"]` marks a virtual, never-stored resource (reviews).
    pub verbs: &'static [&'static str],
    /// openAPIV3Schema per served version (custom resources only).
    pub schemas: BTreeMap<String, Value>,
}

impl ResourceType {
    /// The storage key prefix: `group/plural`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// `group/version` (or `version` for core) of the preferred version.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// Does this type serve `version`?
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        short: &[&str],
        namespaced: bool,
    ) -> Self {
        ResourceType {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            short_names: short.iter().map(|s| (*s).to_string()).collect(),
            categories: Vec::new(),
            namespaced,
            status_subresource: false,
            builtin: true,
            has_generation: false,
            verbs: RW_VERBS,
            schemas: BTreeMap::new(),
        }
    }

    fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    fn with_generation(mut self) -> Self {
        self.has_generation = true;
        self
    }

    fn in_all(mut self) -> Self {
        self.categories = vec!["all".into()];
        self
    }

    /// The resource type a CRD makes servable.
    pub fn from_crd(info: &CrdInfo, crd_v1: &Value) -> Self {
        let mut versions: Vec<String> = info
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.clone())
            .collect();
        versions.sort_by(|a, b| compare_versions(a, b));
        let schemas = info
            .versions
            .iter()
            .filter_map(|v| v.schema.clone().map(|s| (v.name.clone(), s)))
            .collect();
        // The status subresource is per version in v1; any version having it is enough for the sim.
        let status_subresource = crd_v1
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .is_some_and(|vs| {
                vs.iter()
                    .any(|v| v.pointer("/subresources/status").is_some())
            });
        ResourceType {
            group: info.group.clone(),
            versions,
            plural: info.plural.clone(),
            singular: info.singular.clone(),
            kind: info.kind.clone(),
            list_kind: info.list_kind.clone(),
            short_names: info.short_names.clone(),
            categories: info.categories.clone(),
            namespaced: info.namespaced,
            status_subresource,
            builtin: false,
            has_generation: true,
            verbs: RW_VERBS,
            schemas,
        }
    }
}

/// Orders Kubernetes versions as discovery does: GA before beta before alpha, higher numbers first,
/// non-Kubernetes-looking versions last, alphabetically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: u64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        let (stage, n) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return None;
        };
        Some((stage, major, n.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// All resource types, keyed by `group/plural`.
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<String, Arc<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in kinds every sim serves.
    pub fn new() -> Self {
        let b = ResourceType::builtin;
        let list = [
            b("", "v1", "namespaces", "Namespace", &["ns"], false).with_status(),
            b("", "v1", "serviceaccounts", "ServiceAccount", &["sa"], true),
            b("", "v1", "secrets", "Secret", &[], true),
            b("", "v1", "configmaps", "ConfigMap", &["cm"], true),
            b("", "v1", "services", "Service", &["svc"], true)
                .with_status()
                .in_all(),
            b("", "v1", "endpoints", "Endpoints", &["ep"], true),
            b("", "v1", "pods", "Pod", &["po"], true)
                .with_status()
                .in_all(),
            b("", "v1", "events", "Event", &["ev"], true),
            b("apps", "v1", "deployments", "Deployment", &["deploy"], true)
                .with_status()
                .with_generation()
                .in_all(),
            b(
                "networking.k8s.io",
                "v1",
                "servicecidrs",
                "ServiceCIDR",
                &[],
                false,
            )
            .with_status()
            .with_generation(),
            {
                let mut crd = b(
                    "apiextensions.k8s.io",
                    "v1",
                    "customresourcedefinitions",
                    "CustomResourceDefinition",
                    &["crd", "crds"],
                    false,
                )
                .with_status()
                .with_generation();
                crd.categories = vec!["api-extensions".into()];
                crd
            },
        ];
        let mut list = list.to_vec();
        // rbac.authorization.k8s.io/v1, served by every supported version (GA since 1.8).
        for (plural, kind, namespaced) in [
            ("roles", "Role", true),
            ("rolebindings", "RoleBinding", true),
            ("clusterroles", "ClusterRole", false),
            ("clusterrolebindings", "ClusterRoleBinding", false),
        ] {
            list.push(b(crate::rbac::GROUP, "v1", plural, kind, &[], namespaced));
        }
        let mut ssar = b(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            &[],
            false,
        );
        ssar.verbs = &["create"];
        list.push(ssar);
        let mut endpoints_singular_fix = list;
        // "endpoints" is both singular and plural in the apiserver.
        endpoints_singular_fix[5].singular = "endpoints".into();
        Registry {
            types: endpoints_singular_fix
                .into_iter()
                .map(|t| (t.key(), Arc::new(t)))
                .collect(),
        }
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(t.key(), Arc::new(t));
    }

    /// Removes a type by `group/plural`.
    pub fn remove(&mut self, key: &str) -> Option<Arc<ResourceType>> {
        self.types.remove(key)
    }

    /// The type at `group/plural`.
    pub fn get(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.types.get(key).cloned()
    }

    /// The type serving `plural` in `group`/`version`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&format!("{group}/{plural}"))
            .filter(|t| t.serves(version))
            .cloned()
    }

    /// The type of objects with this `apiVersion`/`kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (g, v) = crate::util::split_api_version(api_version);
        self.types
            .values()
            .find(|t| t.group == g && t.kind == kind && t.serves(v))
            .cloned()
    }

    /// Every type.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// The groups served, each with its versions (preferred first), core group first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            let vs = groups.entry(t.group.clone()).or_default();
            for v in &t.versions {
                if !vs.contains(v) {
                    vs.push(v.clone());
                }
            }
        }
        let mut out: Vec<(String, Vec<String>)> = groups
            .into_iter()
            .map(|(g, mut vs)| {
                vs.sort_by(|a, b| compare_versions(a, b));
                (g, vs)
            })
            .collect();
        // Built-in groups first, as the apiserver's group priorities put them.
        out.sort_by_key(|(g, _)| {
            (
                !g.is_empty(),
                g.contains('.') && !g.ends_with(".k8s.io"),
                g.clone(),
            )
        });
        out
    }

    /// The types served in `group`/`version`.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ResourceType>> + 'a {
        self.types
            .values()
            .filter(move |t| t.group == group && t.serves(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_discovery() {
        let mut v = vec!["v1alpha3", "v1", "v1beta1", "v2beta2", "foo"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["v1", "v2beta2", "v1beta1", "v1alpha3", "foo"]);
    }

    #[test]
    fn builtins_are_found_by_kind_and_plural() {
        let r = Registry::new();
        assert_eq!(
            r.by_kind("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert!(r.lookup("", "v1", "secrets").is_some());
        assert!(r.lookup("", "v2", "secrets").is_none());
        assert_eq!(r.get("/endpoints").unwrap().singular, "endpoints");
        assert_eq!(r.groups()[0].0, "");
    }
}
