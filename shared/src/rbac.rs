//! What each verb may do on a cluster: ONE table ([`PERMISSIONS`]) of the requests the verbs
//! send, rendered by `kubectl meshvm <verb> --print-rbac` as the least-privilege ClusterRole and
//! Roles named `meshvm-<verb>`, and named by the hint of a 403 ([`Verb::current`]).
//!
//! Keep the table in step with the code that sends the requests (prepare/observe.rs, apply.rs,
//! delete.rs, plan.rs; bundle/observe.rs, cidr.rs; register/legacy.rs, modern.rs, mod.rs;
//! snapshot.rs `observe`; doctor/fix.rs): plugins/tests/it/rbac.rs runs every verb as a user
//! bound only to the printed roles and fails on any 403.
//!
//! RBAC facts used here (kubernetes/kubernetes pkg/apis/rbac/v1 and plugin/pkg/auth/authorizer/rbac
//! rbac.go `RuleAllows`): `resourceNames` cannot restrict `create` (the name is not known when
//! a POST is authorized) nor a nameless `list` — except a list whose `fieldSelector` requires
//! `metadata.name=x`, which the apiserver authorizes as a request for `x` on every release of
//! the matrix (k8s.io/apiserver@kubernetes-1.14.0 pkg/endpoints/request/requestinfo.go:232-238,
//! @kubernetes-1.33.0 :247-253), so the ConfigMaps doctor lists by name are granted by name;
//! a Role grants only in its namespace, a ClusterRole bound with a ClusterRoleBinding everywhere. Writes by server-side apply are `patch`; without it
//! (Kubernetes < 1.16, 415) the same write is `get` + `create` or `update`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// A verb of `kubectl meshvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// `kubectl meshvm prepare`
    Prepare,
    /// `kubectl meshvm bundle`
    Bundle,
    /// `kubectl meshvm register`
    Register,
    /// `kubectl meshvm doctor`
    Doctor,
}

static CURRENT: OnceLock<Verb> = OnceLock::new();

impl Verb {
    /// The verb's word: `prepare`.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Prepare => "prepare",
            Verb::Bundle => "bundle",
            Verb::Register => "register",
            Verb::Doctor => "doctor",
        }
    }

    /// Record the verb this process runs (its entry point calls it first), so a 403's hint
    /// can name `kubectl meshvm <verb> --print-rbac`.
    pub fn set_current(self) {
        let _ = CURRENT.set(self);
    }

    /// The verb this process runs, when its entry point said.
    pub fn current() -> Option<Verb> {
        CURRENT.get().copied()
    }

    /// The hint's command: `` `kubectl meshvm doctor --print-rbac` ``.
    pub fn print_rbac_command(self) -> String {
        format!("`kubectl meshvm {} --print-rbac`", self.name())
    }
}

/// Where a permission is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A cluster-scoped resource, or one read across all namespaces: ClusterRole.
    Cluster,
    /// The Istio namespace (`--istio-namespace`): a Role there.
    Istio,
    /// The VM's namespace: a Role there when the command names it (`-n`, `--vm-namespace`),
    /// else the ClusterRole.
    Vm,
    /// A fixed namespace: a Role there.
    Namespace(&'static str),
}

/// One permission a verb uses.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    /// The verb that needs it.
    pub verb: Verb,
    /// API group (`""` core).
    pub group: &'static str,
    /// Resource (plural, `serviceaccounts/token` for subresources).
    pub resource: &'static str,
    /// Kubernetes verbs.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
    /// `resourceNames`, when the names are fixed (empty: any).
    pub names: &'static [&'static str],
    /// Needed only on Istio 1.4 (Citadel) clusters: rendered as a separate ClusterRole
    /// `meshvm-<verb>-legacy`, so modern clusters never grant it.
    pub legacy_only: bool,
    /// Why the verb needs it (a YAML comment beside the rule).
    pub why: &'static str,
}

const fn p(
    verb: Verb,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    scope: Scope,
    names: &'static [&'static str],
    why: &'static str,
) -> Permission {
    Permission {
        verb,
        group,
        resource,
        verbs,
        scope,
        names,
        legacy_only: false,
        why,
    }
}

const fn legacy(perm: Permission) -> Permission {
    Permission {
        legacy_only: true,
        ..perm
    }
}

use Scope::{Cluster, Istio, Vm};
use Verb::{Bundle, Doctor, Prepare, Register};

const ISTIO: &str = "networking.istio.io";
/// Server-side apply, or (before 1.16) read + create/replace.
const APPLY: &[&str] = &["get", "create", "update", "patch"];

/// Every request of every verb (discovery and `/version` need nothing: every authenticated user
/// has them through the bootstrap `system:discovery` ClusterRole).
pub const PERMISSIONS: &[Permission] = &[
    // prepare: prepare/observe.rs, plan.rs, apply.rs, delete.rs.
    p(
        Prepare,
        "",
        "namespaces",
        &["get", "create", "update", "patch", "delete"],
        Cluster,
        &[],
        "read the Istio and VM namespaces, create the VM's (server-side apply), --delete removes it",
    ),
    p(
        Prepare,
        "",
        "secrets",
        &["get", "update", "delete"],
        Istio,
        &["cacerts"],
        "read the plugged-in CA; --force replaces it; --delete --include-ca removes it",
    ),
    p(
        Prepare,
        "",
        "secrets",
        &["create"],
        Istio,
        &[],
        "plug in the CA (`cacerts`)",
    ),
    p(
        Prepare,
        "apps",
        "deployments",
        &["get", "list", "patch"],
        Istio,
        &[],
        "find the control plane (era); --restart-control-plane restarts the CA",
    ),
    // The VM namespace may not exist before prepare creates it, so no Role can wait there.
    p(
        Prepare,
        "",
        "serviceaccounts",
        &["get", "list", "create", "update", "patch"],
        Cluster,
        &[],
        "the VM's ServiceAccount (created in the namespace prepare creates)",
    ),
    p(
        Prepare,
        ISTIO,
        "workloadgroups",
        APPLY,
        Cluster,
        &[],
        "--workload-group: the VM's WorkloadGroup",
    ),
    p(
        Prepare,
        ISTIO,
        "workloadgroups",
        &["list"],
        Cluster,
        &[],
        "--delete lists what it removes",
    ),
    p(
        Prepare,
        ISTIO,
        "workloadentries",
        &["list"],
        Cluster,
        &[],
        "refresh hints for the group's WorkloadEntries; --delete lists what it removes",
    ),
    p(
        Prepare,
        "",
        "services",
        &["list"],
        Cluster,
        &[],
        "--delete lists what it removes",
    ),
    p(
        Prepare,
        "",
        "endpoints",
        &["list"],
        Cluster,
        &[],
        "--delete lists what it removes",
    ),
    legacy(p(
        Prepare,
        "",
        "secrets",
        &["list"],
        Cluster,
        &[],
        "after a CA change on Istio 1.4, wait until Citadel re-issued every istio.<sa> Secret (listed by type istio.io/key-and-cert)",
    )),
    // prepare --expose: prepare/expose.rs, observe.rs.
    p(
        Prepare,
        "",
        "services",
        &["get"],
        Cluster,
        &[],
        "--expose SVC.NS: the Services the VM calls, in their namespaces",
    ),
    p(
        Prepare,
        ISTIO,
        "serviceentries",
        &["list"],
        Cluster,
        &[],
        "--expose: the 127.255.x.y addresses other ServiceEntries hold",
    ),
    p(
        Prepare,
        ISTIO,
        "serviceentries",
        &["get", "create", "update", "patch", "delete"],
        Cluster,
        &[],
        "--expose: the .global ServiceEntries in the VM's namespace (which may not exist yet)",
    ),
    p(
        Prepare,
        ISTIO,
        "gateways",
        &["get", "list"],
        Istio,
        &[],
        "--expose (modern): the cross-network gateway",
    ),
    // bundle: bundle/observe.rs, cidr.rs, renew.rs; istio.rs (era).
    p(
        Bundle,
        "apps",
        "deployments",
        &["get", "list"],
        Istio,
        &[],
        "find the control plane (era)",
    ),
    p(
        Bundle,
        "",
        "secrets",
        &["get"],
        Istio,
        &["cacerts"],
        "the root a legacy VM trusts",
    ),
    p(
        Bundle,
        "",
        "services",
        &["get"],
        Istio,
        &[],
        "the gateway's address",
    ),
    p(
        Bundle,
        "",
        "configmaps",
        &["get"],
        Istio,
        &[],
        "mesh config and sidecar injector (modern)",
    ),
    p(
        Bundle,
        "",
        "services",
        &["get"],
        Scope::Namespace("default"),
        &["kubernetes"],
        "the Service range, from the address of Service kubernetes",
    ),
    p(
        Bundle,
        "networking.k8s.io",
        "servicecidrs",
        &["get"],
        Cluster,
        &["kubernetes"],
        "the Service range (Kubernetes 1.33+)",
    ),
    p(
        Bundle,
        "",
        "serviceaccounts",
        &["get", "list"],
        Vm,
        &[],
        "the VM's ServiceAccount",
    ),
    p(
        Bundle,
        "",
        "secrets",
        &["get"],
        Vm,
        &[],
        "the legacy VM's identity (istio.<sa>)",
    ),
    p(
        Bundle,
        "",
        "configmaps",
        &["get"],
        Vm,
        &["istio-ca-root-cert"],
        "the root a modern VM trusts",
    ),
    p(
        Bundle,
        "",
        "serviceaccounts/token",
        &["create"],
        Vm,
        &[],
        "the modern VM's bootstrap token",
    ),
    p(
        Bundle,
        ISTIO,
        "workloadgroups",
        &["get"],
        Vm,
        &[],
        "--workload-group: the VM's settings",
    ),
    p(
        Bundle,
        "",
        "services",
        &["create", "delete"],
        Vm,
        &[],
        "learn the Service range from the API server's refusal of a probe Service (dry run)",
    ),
    p(
        Bundle,
        ISTIO,
        "serviceentries",
        &["list"],
        Vm,
        &[],
        "legacy: the .global ServiceEntries `prepare --expose` made (their /etc/hosts lines)",
    ),
    // register: register/mod.rs, legacy.rs, modern.rs, service_entry.rs, prune.rs.
    p(
        Register,
        "",
        "namespaces",
        &["get"],
        Cluster,
        &[],
        "check the VM's namespace exists",
    ),
    p(
        Register,
        "",
        "serviceaccounts",
        &["get", "list"],
        Vm,
        &[],
        "the VM's ServiceAccount",
    ),
    p(
        Register,
        "",
        "services",
        &["get", "create", "update", "patch"],
        Vm,
        &[],
        "the VM's Service (created, or --update-service)",
    ),
    p(
        Register,
        "",
        "endpoints",
        &["get", "create", "update"],
        Vm,
        &[],
        "legacy: the VM's address",
    ),
    p(
        Register,
        ISTIO,
        "workloadgroups",
        &["get"],
        Vm,
        &[],
        "--workload-group: labels and account",
    ),
    p(
        Register,
        ISTIO,
        "workloadentries",
        &["get", "create", "update", "patch", "delete"],
        Vm,
        &[],
        "modern: the VM's WorkloadEntry; --deregister removes it",
    ),
    p(
        Register,
        ISTIO,
        "serviceentries",
        &["get", "create", "update", "delete"],
        Vm,
        &[],
        "--service-entry: the mesh-expansion-<svc> ServiceEntry; --deregister removes it",
    ),
    p(
        Register,
        "",
        "services",
        &["delete"],
        Vm,
        &[],
        "--service-entry --deregister: the Service it made, with the last address",
    ),
    p(
        Register,
        ISTIO,
        "workloadentries",
        &["list"],
        Vm,
        &[],
        "--prune: duplicate and unhealthy WorkloadEntries",
    ),
    p(
        Register,
        "",
        "endpoints",
        &["list"],
        Vm,
        &[],
        "--prune: addresses listed twice",
    ),
    // doctor: snapshot.rs `observe`, doctor/fix.rs.
    p(
        Doctor,
        "",
        "namespaces",
        &["list"],
        Cluster,
        &[],
        "mesh checks",
    ),
    p(
        Doctor,
        "",
        "services",
        &["list"],
        Cluster,
        &[],
        "mesh checks",
    ),
    p(
        Doctor,
        "",
        "endpoints",
        &["list"],
        Cluster,
        &[],
        "mesh checks",
    ),
    // snapshot.rs `read_pods`: the metadata of every Pod (in full before Kubernetes 1.15),
    // then one pod per template by name.
    p(
        Doctor,
        "",
        "pods",
        &["get", "list"],
        Cluster,
        &[],
        "workload checks: every Pod's metadata, one pod per template in full",
    ),
    p(
        Doctor,
        "",
        "serviceaccounts",
        &["list"],
        Cluster,
        &[],
        "identity checks",
    ),
    // snapshot.rs `read_config_maps`: lists by `fieldSelector=metadata.name=…`, which RBAC
    // authorizes as a request for that name, and GETs by name.
    p(
        Doctor,
        "",
        "configmaps",
        &["list"],
        Cluster,
        &["istio", "istio-ca-root-cert", "prometheus"],
        "mesh config, istio-ca-root-cert roots, Prometheus scrape config: listed by name in every namespace",
    ),
    p(
        Doctor,
        "",
        "configmaps",
        &["get"],
        Istio,
        &[],
        "the sidecar injector's config, and each revision's mesh config and injector (istio-<rev>, istio-sidecar-injector-<rev>)",
    ),
    legacy(p(
        Doctor,
        "",
        "configmaps",
        &["get"],
        Scope::Namespace("kube-system"),
        &["kube-dns", "coredns"],
        "Istio 1.4: the cluster DNS's stub domain for global (network.global-services)",
    )),
    // snapshot.rs `read_kept`: the metadata of every Deployment (in full before 1.15), then
    // the control plane's (istio*) by name.
    p(
        Doctor,
        "apps",
        "deployments",
        &["get", "list"],
        Cluster,
        &[],
        "find the control plane (era) and the gateways",
    ),
    p(
        Doctor,
        ISTIO,
        "destinationrules",
        &["list"],
        Cluster,
        &[],
        "mTLS checks",
    ),
    p(
        Doctor,
        ISTIO,
        "destinationrules",
        &["create"],
        Istio,
        &[],
        "--fix: the runbook's mesh-wide DestinationRules",
    ),
    p(
        Doctor,
        ISTIO,
        "gateways",
        &["list"],
        Cluster,
        &[],
        "gateway checks",
    ),
    p(
        Doctor,
        ISTIO,
        "virtualservices",
        &["list"],
        Cluster,
        &[],
        "gateway checks",
    ),
    p(
        Doctor,
        ISTIO,
        "workloadentries",
        &["list"],
        Cluster,
        &[],
        "VM checks",
    ),
    p(
        Doctor,
        ISTIO,
        "serviceentries",
        &["list"],
        Cluster,
        &[],
        "network.global-services: the .global ServiceEntries",
    ),
    p(
        Doctor,
        ISTIO,
        "envoyfilters",
        &["list"],
        Cluster,
        &[],
        "network.global-services: the .global SNI rewrite",
    ),
    p(
        Doctor,
        ISTIO,
        "workloadgroups",
        &["list"],
        Cluster,
        &[],
        "VM checks",
    ),
    p(
        Doctor,
        "security.istio.io",
        "peerauthentications",
        &["list"],
        Cluster,
        &[],
        "mTLS checks",
    ),
    p(
        Doctor,
        "authentication.istio.io",
        "meshpolicies",
        &["list"],
        Cluster,
        &[],
        "mTLS checks (Istio 1.4)",
    ),
    p(
        Doctor,
        "authentication.istio.io",
        "policies",
        &["list"],
        Cluster,
        &[],
        "mTLS checks (Istio 1.4)",
    ),
    // doctor --fix --strict (doctor/strict.rs): create the namespace's policy `default`, or
    // replace its own (PUT, after the list read); a lost race is judged by a get. --fix --undo
    // puts replaced ones back (create, else get + update) and deletes the created ones.
    p(
        Doctor,
        "security.istio.io",
        "peerauthentications",
        &["get", "create", "update", "delete"],
        Cluster,
        &[],
        "--fix --strict and --undo: PeerAuthentication default per ready namespace",
    ),
    legacy(p(
        Doctor,
        "authentication.istio.io",
        "policies",
        &["get", "create", "update", "delete"],
        Cluster,
        &[],
        "--fix --strict and --undo (Istio 1.4): Policy default per ready namespace",
    )),
    legacy(p(
        Doctor,
        "authentication.istio.io",
        "meshpolicies",
        &["get", "create", "update", "delete"],
        Cluster,
        &[],
        "--fix --strict and --undo (Istio 1.4): MeshPolicy default once every namespace is ready",
    )),
    p(
        Doctor,
        "networking.k8s.io",
        "servicecidrs",
        &["list"],
        Cluster,
        &[],
        "the Service range (1.33+)",
    ),
    p(
        Doctor,
        "",
        "secrets",
        &["get"],
        Istio,
        &["cacerts", "istio-ca-secret"],
        "CA checks: the plugged-in CA and the self-signed CA's root",
    ),
    legacy(p(
        Doctor,
        "",
        "secrets",
        &["list"],
        Cluster,
        &[],
        "Istio 1.4: the roots of Citadel's istio.<sa> Secrets (listed by type istio.io/key-and-cert only)",
    )),
];

/// The namespaces a `--print-rbac` renders Roles for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// `--istio-namespace`.
    pub istio: String,
    /// The VM's namespace, when the command names it.
    pub vm: Option<String>,
}

/// One rendered rule.
struct Rule {
    group: &'static str,
    resource: &'static str,
    verbs: BTreeSet<&'static str>,
    names: &'static [&'static str],
    why: Vec<&'static str>,
}

fn add(rules: &mut Vec<Rule>, perm: &Permission) {
    match rules
        .iter_mut()
        .find(|r| r.group == perm.group && r.resource == perm.resource && r.names == perm.names)
    {
        Some(r) => {
            r.verbs.extend(perm.verbs.iter().copied());
            if !r.why.contains(&perm.why) {
                r.why.push(perm.why);
            }
        }
        None => rules.push(Rule {
            group: perm.group,
            resource: perm.resource,
            verbs: perm.verbs.iter().copied().collect(),
            names: perm.names,
            why: vec![perm.why],
        }),
    }
}

/// The roles of one verb: `(kind, name, namespace, rules)`.
fn roles(verb: Verb, ns: &Namespaces) -> Vec<(&'static str, String, Option<String>, Vec<Rule>)> {
    let mut out: Vec<(&'static str, String, Option<String>, Vec<Rule>)> = Vec::new();
    for perm in PERMISSIONS.iter().filter(|p| p.verb == verb) {
        let (kind, name, namespace) = match (perm.legacy_only, perm.scope) {
            (true, _) => (
                "ClusterRole",
                format!("meshvm-{}-legacy", verb.name()),
                None,
            ),
            (false, Scope::Cluster) => ("ClusterRole", format!("meshvm-{}", verb.name()), None),
            (false, Scope::Vm) => match &ns.vm {
                Some(vm) => ("Role", format!("meshvm-{}", verb.name()), Some(vm.clone())),
                None => ("ClusterRole", format!("meshvm-{}", verb.name()), None),
            },
            (false, Scope::Istio) => (
                "Role",
                format!("meshvm-{}", verb.name()),
                Some(ns.istio.clone()),
            ),
            (false, Scope::Namespace(n)) => (
                "Role",
                format!("meshvm-{}", verb.name()),
                Some(n.to_owned()),
            ),
        };
        if let Some((_, _, _, rules)) = out
            .iter_mut()
            .find(|(k, n, s, _)| *k == kind && *n == name && *s == namespace)
        {
            add(rules, perm);
        } else {
            let mut rules = Vec::new();
            add(&mut rules, perm);
            out.push((kind, name, namespace, rules));
        }
    }
    out
}

fn yaml_list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let quoted: Vec<String> = items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The verb's roles as YAML for `kubectl apply -f -`, with comments saying how to bind them.
pub fn render(verb: Verb, ns: &Namespaces) -> String {
    let roles = roles(verb, ns);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The permissions `kubectl meshvm {v}` uses (least privilege). Bind them to the user that runs it:",
        v = verb.name()
    );
    for (kind, name, namespace, _) in &roles {
        let _ = match (kind, namespace) {
            (&"ClusterRole", _) => writeln!(
                out,
                "#   kubectl create clusterrolebinding {name} --clusterrole {name} --user USER"
            ),
            (_, Some(n)) => writeln!(
                out,
                "#   kubectl create rolebinding {name} -n {n} --role {name} --user USER"
            ),
            _ => Ok(()),
        };
    }
    if roles.iter().any(|(_, n, _, _)| n.ends_with("-legacy")) {
        let _ = writeln!(
            out,
            "# meshvm-{}-legacy is needed only on Istio 1.4 (Citadel) clusters.",
            verb.name()
        );
    }
    for (kind, name, namespace, rules) in &roles {
        out.push_str("---\napiVersion: rbac.authorization.k8s.io/v1\n");
        let _ = writeln!(out, "kind: {kind}\nmetadata:\n  name: {name}");
        if let Some(n) = namespace {
            let _ = writeln!(out, "  namespace: {n}");
        }
        out.push_str("  labels:\n    app.kubernetes.io/managed-by: meshvm\nrules:\n");
        for rule in rules {
            let _ = writeln!(out, "# {}", rule.why.join("; "));
            let _ = writeln!(out, "- apiGroups: {}", yaml_list([rule.group]));
            let _ = writeln!(out, "  resources: {}", yaml_list([rule.resource]));
            if !rule.names.is_empty() {
                let _ = writeln!(out, "  resourceNames: {}", yaml_list(rule.names.iter()));
            }
            let _ = writeln!(out, "  verbs: {}", yaml_list(rule.verbs.iter()));
        }
    }
    out
}

/// `--print-rbac`: write the verb's roles to stdout (a closed pipe is the reader's choice).
pub fn print(verb: Verb, ns: &Namespaces) {
    use std::io::Write as _;
    let _ = std::io::stdout()
        .lock()
        .write_all(render(verb, ns).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_has_a_cluster_role_and_names_are_fixed_only_where_verbs_allow() {
        for verb in [Prepare, Bundle, Register, Doctor] {
            let text = render(
                verb,
                &Namespaces {
                    istio: "istio-system".into(),
                    vm: None,
                },
            );
            assert!(
                text.contains(&format!(
                    "kind: ClusterRole\nmetadata:\n  name: meshvm-{}\n",
                    verb.name()
                )),
                "{text}"
            );
        }
        // resourceNames cannot restrict create, nor a list unless it selects on metadata.name:
        // only doctor's by-name ConfigMap lists (snapshot.rs `read_config_maps`) do.
        for perm in PERMISSIONS.iter().filter(|p| !p.names.is_empty()) {
            assert!(!perm.verbs.contains(&"create"), "{perm:?}");
            if perm.verbs.contains(&"list") {
                assert_eq!(
                    (perm.verb, perm.resource, perm.names),
                    (
                        Doctor,
                        "configmaps",
                        crate::snapshot::CONFIG_MAPS_EVERYWHERE.as_slice()
                    ),
                    "{perm:?}"
                );
            }
        }
    }

    #[test]
    fn doctor_never_lists_every_secret_in_its_main_role() {
        let text = render(
            Doctor,
            &Namespaces {
                istio: "mesh".into(),
                vm: None,
            },
        );
        let main = text
            .split("---\n")
            .find(|d| d.contains("kind: ClusterRole\nmetadata:\n  name: meshvm-doctor\n"))
            .unwrap();
        assert!(!main.contains("\"secrets\""), "{main}");
        assert!(text.contains("name: meshvm-doctor-legacy"), "{text}");
        assert!(
            text.contains("namespace: mesh\n") && text.contains("\"cacerts\", \"istio-ca-secret\""),
            "{text}"
        );
    }

    #[test]
    fn a_named_vm_namespace_gets_a_role() {
        let ns = Namespaces {
            istio: "istio-system".into(),
            vm: Some("vm".into()),
        };
        let text = render(Register, &ns);
        assert!(
            text.contains("kind: Role\nmetadata:\n  name: meshvm-register\n  namespace: vm\n"),
            "{text}"
        );
        assert!(
            text.contains("kubectl create rolebinding meshvm-register -n vm"),
            "{text}"
        );
    }
}
