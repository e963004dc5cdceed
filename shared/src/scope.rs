//! Where a VM verb works and as whom: the namespace (kubectl's rule, [`crate::kube::resolve_namespace`])
//! and the VM's ServiceAccount — one rule for prepare, bundle and register ([`service_account`]).
//!
//! The ServiceAccount rule: `-s`; else the WorkloadGroup's `template.serviceAccount` (modern, when
//! the verb works with a group: prepare wrote it there); else the ServiceAccount prepare made in
//! the namespace (it labels what it makes [`MANAGED_BY_LABEL`]`=`[`MANAGED_BY_VALUE`]); else the
//! namespace's name, as the runbook names it. Above `kube` and `istio`, below the verbs.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use std::fmt::Write as _;

use crate::istio::IstioKind;
use crate::kube::{Connection, Request, VerbNamespace};

/// The label prepare puts on the namespace and ServiceAccount it makes, so `--delete` can tell
/// them apart and every verb can find the VM's ServiceAccount.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "meshvm";

/// Where the VM's ServiceAccount came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountSource {
    /// `-s`.
    Flag,
    /// The WorkloadGroup's `template.serviceAccount` (the group's name).
    WorkloadGroup(String),
    /// The ServiceAccount prepare made in the namespace (labelled managed-by=meshvm).
    Prepared,
    /// The namespace's name: the runbook's convention, and what prepare makes without `-s`.
    NamespaceName,
}

/// The VM's ServiceAccount and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The ServiceAccount's name.
    pub name: String,
    /// Where it came from.
    pub source: AccountSource,
}

/// Why the ServiceAccount could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// prepare made several ServiceAccounts in the namespace and none is named after it.
    #[error(
        "namespace {namespace} holds {} ServiceAccounts prepare made ({}), so which one the VM runs as is not clear",
        accounts.len(),
        accounts.join(", ")
    )]
    Ambiguous {
        /// The namespace.
        namespace: String,
        /// The ServiceAccounts labelled managed-by=meshvm.
        accounts: Vec<String>,
    },
    /// Reading the cluster failed.
    #[error(transparent)]
    Kube(Box<crate::kube::Error>),
}

impl From<crate::kube::Error> for Error {
    fn from(e: crate::kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl crate::errors::Diagnose for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Ambiguous { accounts, .. } => Some(format!(
                "name it with -s, e.g. -s {}",
                accounts.first().map_or("SA", String::as_str)
            )),
            Error::Kube(e) => e.hint(),
        }
    }
}

/// The rule, pure: `-s`, else the group's, else the one prepare made (the namespace-named one
/// when it made several), else the namespace's name.
pub fn choose_account(
    namespace: &str,
    flag: Option<&str>,
    group: Option<(&str, &str)>,
    prepared: &[String],
) -> Result<Account, Error> {
    if let Some(sa) = flag {
        return Ok(Account {
            name: sa.to_owned(),
            source: AccountSource::Flag,
        });
    }
    if let Some((group, sa)) = group.filter(|(_, sa)| !sa.is_empty()) {
        return Ok(Account {
            name: sa.to_owned(),
            source: AccountSource::WorkloadGroup(group.to_owned()),
        });
    }
    match prepared {
        [] => Ok(Account {
            name: namespace.to_owned(),
            source: AccountSource::NamespaceName,
        }),
        [one] => Ok(Account {
            name: one.clone(),
            source: AccountSource::Prepared,
        }),
        several if several.iter().any(|s| s == namespace) => Ok(Account {
            name: namespace.to_owned(),
            source: AccountSource::Prepared,
        }),
        several => {
            let mut accounts = several.to_vec();
            accounts.sort();
            Err(Error::Ambiguous {
                namespace: namespace.to_owned(),
                accounts,
            })
        }
    }
}

/// The ServiceAccounts prepare made in `namespace` (labelled managed-by=meshvm), sorted.
pub async fn prepared_accounts(
    conn: &Connection,
    namespace: &str,
) -> Result<Vec<String>, crate::kube::Error> {
    Ok(prepared_account_objects(conn, namespace)
        .await?
        .into_iter()
        .filter_map(|sa| sa.metadata.name)
        .collect())
}

/// [`prepared_accounts`] as objects, sorted by name.
async fn prepared_account_objects(
    conn: &Connection,
    namespace: &str,
) -> Result<Vec<ServiceAccount>, crate::kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(conn.client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let mut list = crate::read::list_all(
        conn,
        &api,
        Request::new("list", "serviceaccounts").ns(namespace),
        &params,
        |sa: ServiceAccount| sa.metadata.name.is_some().then_some(sa),
    )
    .await?;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(list)
}

/// The VM's ServiceAccount in `namespace` by the one rule ([`choose_account`]); lists the
/// namespace's ServiceAccounts only when neither `-s` nor the group settles it.
pub async fn service_account(
    conn: &Connection,
    namespace: &str,
    flag: Option<&str>,
    group: Option<(&str, &str)>,
) -> Result<Account, Error> {
    if flag.is_some() || group.is_some_and(|(_, sa)| !sa.is_empty()) {
        return choose_account(namespace, flag, group, &[]);
    }
    let prepared = prepared_accounts(conn, namespace).await?;
    choose_account(namespace, flag, group, &prepared)
}

/// What one round trip reads about the VM's ServiceAccount before the rule settles it: the
/// ServiceAccounts prepare made in the namespace (listed only when no `-s` names the account)
/// and, by name, the likeliest one — `-s`'s, else the namespace's name (the runbook's, and what
/// prepare makes without `-s`) — both sent together ([`read_candidates`]).
#[derive(Debug)]
pub struct Candidates {
    namespace: String,
    flag: Option<String>,
    /// The labelled ServiceAccounts, sorted by name (empty when not listed).
    prepared: Vec<ServiceAccount>,
    /// The name read by GET, and what the GET gave (`Ok(None)`: absent).
    named: (String, Result<Option<ServiceAccount>, crate::kube::Error>),
}

/// Read the [`Candidates`] for the VM's ServiceAccount in `namespace`: the GET of `-s`'s (else
/// the namespace-named) ServiceAccount and, without `-s`, the list of those prepare made, in one
/// round trip. A failed list is an error; a failed GET is kept, and returned by
/// [`settle_account`] only when the rule chooses that account.
pub async fn read_candidates(
    conn: &Connection,
    namespace: &str,
    flag: Option<&str>,
) -> Result<Candidates, crate::kube::Error> {
    let name = flag.unwrap_or(namespace).to_owned();
    let api: Api<ServiceAccount> = Api::namespaced(conn.client.clone(), namespace);
    let get = conn.call(
        Request::new("get", "serviceaccounts")
            .ns(namespace)
            .name(&name),
        || api.get_opt(&name),
    );
    let list = async {
        if flag.is_some() {
            return Ok(Vec::new());
        }
        prepared_account_objects(conn, namespace).await
    };
    let (named, prepared) = tokio::join!(get, list);
    Ok(Candidates {
        namespace: namespace.to_owned(),
        flag: flag.map(str::to_owned),
        prepared: prepared?,
        named: (name, named),
    })
}

impl Candidates {
    /// The account by the one rule ([`choose_account`]), with `group`'s `(name, serviceAccount)`
    /// when the verb works with a WorkloadGroup.
    pub fn settle(&self, group: Option<(&str, &str)>) -> Result<Account, Error> {
        let flag = self.flag.as_deref();
        if flag.is_some() || group.is_some_and(|(_, sa)| !sa.is_empty()) {
            return choose_account(&self.namespace, flag, group, &[]);
        }
        let names: Vec<String> = self
            .prepared
            .iter()
            .filter_map(|sa| sa.metadata.name.clone())
            .collect();
        choose_account(&self.namespace, flag, group, &names)
    }

    /// The ServiceAccount `name` as read, taken out, when it was (`None`: neither the GET nor
    /// the list covered it).
    fn take(&mut self, name: &str) -> Option<Result<Option<ServiceAccount>, crate::kube::Error>> {
        if self.named.0 == name {
            let result = std::mem::replace(&mut self.named.1, Ok(None));
            return Some(result);
        }
        self.prepared
            .iter()
            .position(|sa| sa.metadata.name.as_deref() == Some(name))
            .map(|i| Ok(Some(self.prepared.swap_remove(i))))
    }
}

/// GET the ServiceAccount `namespace/name` (`None`: absent).
async fn account_object(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<Option<ServiceAccount>, crate::kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(conn.client.clone(), namespace);
    conn.call(
        Request::new("get", "serviceaccounts")
            .ns(namespace)
            .name(name),
        || api.get_opt(name),
    )
    .await
}

/// The account by the one rule and its object: from `candidates` when they hold it, else by one
/// more GET (only for a group naming an account that neither `-s`, the namespace's name nor
/// prepare's label gives). The error of the account's own GET is returned; the GET of a candidate
/// the rule did not choose is not looked at.
pub async fn settle_account(
    conn: &Connection,
    mut candidates: Candidates,
    group: Option<(&str, &str)>,
) -> Result<(Account, Option<ServiceAccount>), Error> {
    let account = candidates.settle(group)?;
    let object = match candidates.take(&account.name) {
        Some(read) => read?,
        None => account_object(conn, &candidates.namespace, &account.name).await?,
    };
    Ok((account, object))
}

/// The template ServiceAccount of a WorkloadGroup object (`""` when it names none).
pub fn group_account(group: &DynamicObject) -> &str {
    group
        .data
        .pointer("/spec/template/serviceAccount")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
}

/// The line a verb prints on stderr when it works in `default` without anyone naming it and
/// nothing meshvm made is there: which namespace, why, and the `-n` that names another.
pub fn default_namespace_note(ns: &VerbNamespace) -> String {
    format!(
        "working in namespace {} ({}), where nothing meshvm made is: name the VM's namespace with -n NS",
        ns.name,
        ns.why()
    )
}

/// Whether `namespace` holds anything meshvm made: the namespace labelled by prepare, a
/// ServiceAccount prepare made, or a WorkloadGroup (where the cluster serves the kind).
pub async fn holds_meshvm_objects(
    conn: &Connection,
    namespace: &str,
) -> Result<bool, crate::kube::Error> {
    let namespaces: Api<Namespace> = Api::all(conn.client.clone());
    let ns = conn
        .call(Request::new("get", "namespaces").name(namespace), || {
            namespaces.get_opt(namespace)
        })
        .await?;
    if ns.is_none() {
        return Ok(false);
    }
    if is_managed(ns.as_ref().map(|n| &n.metadata)) {
        return Ok(true);
    }
    if !prepared_accounts(conn, namespace).await?.is_empty() {
        return Ok(true);
    }
    let Some(version) = IstioKind::WorkloadGroup.served_version(conn).await? else {
        return Ok(false);
    };
    let groups: Api<DynamicObject> = Api::namespaced_with(
        conn.client.clone(),
        namespace,
        &IstioKind::WorkloadGroup.resource(&version),
    );
    let params = ListParams::default().limit(1);
    let found = conn
        .call(
            Request::new("list", IstioKind::WorkloadGroup.resource_name()).ns(namespace),
            || groups.list(&params),
        )
        .await?;
    Ok(!found.items.is_empty())
}

/// The note for `ns` when it deserves one ([`default_namespace_note`]): `None` when `-n` or the
/// context named it, when it is not `default`, or when meshvm made something there.
pub async fn note_for_namespace(
    conn: &Connection,
    ns: &VerbNamespace,
) -> Result<Option<String>, crate::kube::Error> {
    if !ns.is_implicit_default() || holds_meshvm_objects(conn, &ns.name).await? {
        return Ok(None);
    }
    Ok(Some(default_namespace_note(ns)))
}

/// Whether object metadata carries prepare's managed-by label.
pub fn is_managed(
    meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> bool {
    meta.and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// The command that prepares `namespace` for a VM running as `account`, as the hints print it:
/// `kubectl meshvm prepare -n NS` (`-s SA` when the account is not the namespace's name, and
/// `--workload-group G`, `--context C` when given).
pub fn prepare_command(
    namespace: &str,
    account: &str,
    workload_group: Option<&str>,
    context: Option<&str>,
) -> String {
    let mut cmd = format!("kubectl meshvm prepare -n {namespace}");
    if account != namespace {
        let _ = write!(cmd, " -s {account}");
    }
    if let Some(g) = workload_group {
        let _ = write!(cmd, " --workload-group {g}");
    }
    if let Some(c) = context {
        let _ = write!(cmd, " --context {c}");
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::NamespaceSource;

    #[test]
    fn one_rule_for_the_account() {
        let prepared = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let a = choose_account("expandvm", None, None, &[]).unwrap();
        assert_eq!(
            (a.name.as_str(), a.source),
            ("expandvm", AccountSource::NamespaceName)
        );
        let a = choose_account("expandvm", None, None, &prepared(&["vm-sa"])).unwrap();
        assert_eq!(
            (a.name.as_str(), a.source),
            ("vm-sa", AccountSource::Prepared)
        );
        let a = choose_account(
            "expandvm",
            Some("x"),
            Some(("g", "y")),
            &prepared(&["vm-sa"]),
        )
        .unwrap();
        assert_eq!((a.name.as_str(), a.source), ("x", AccountSource::Flag));
        let a = choose_account("vm", None, Some(("g", "y")), &prepared(&["vm-sa"])).unwrap();
        assert_eq!(a.name, "y");
        assert_eq!(a.source, AccountSource::WorkloadGroup("g".into()));
        let a = choose_account("vm", None, Some(("g", "")), &[]).unwrap();
        assert_eq!(a.name, "vm", "a group naming none falls through");
        let a = choose_account("vm", None, None, &prepared(&["a", "vm"])).unwrap();
        assert_eq!(a.name, "vm");
        let e = choose_account("vm", None, None, &prepared(&["b", "a"])).unwrap_err();
        assert!(e.to_string().contains("(a, b)"), "{e}");
        assert!(crate::errors::Diagnose::hint(&e).unwrap().contains("-s a"));
    }

    fn account_json(name: &str, labelled: bool) -> serde_json::Value {
        let mut sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": "vm"}});
        if labelled {
            sa["metadata"]["labels"] = serde_json::json!({MANAGED_BY_LABEL: MANAGED_BY_VALUE});
        }
        sa
    }

    /// A namespace `vm` holding `accounts` (name, labelled by prepare).
    fn namespace_with(
        accounts: &'static [(&'static str, bool)],
    ) -> (Connection, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        crate::read::tests::mock(move |r| {
            let base = "/api/v1/namespaces/vm/serviceaccounts";
            if r.path == base {
                let items: Vec<_> = accounts
                    .iter()
                    .filter(|(_, labelled)| *labelled)
                    .map(|(n, l)| account_json(n, *l))
                    .collect();
                return (
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccountList",
                        "metadata": {}, "items": items}),
                );
            }
            let name = r.path.strip_prefix(&format!("{base}/")).unwrap_or_default();
            match accounts.iter().find(|(n, _)| *n == name) {
                Some((n, l)) => (200, account_json(n, *l)),
                None => crate::read::tests::status(404, "NotFound", "not found"),
            }
        })
    }

    #[tokio::test]
    async fn candidates_settle_the_account_in_one_round_trip() {
        // No -s: the namespace-named one is read by name while prepare's are listed.
        let (conn, log) = namespace_with(&[("vm", true)]);
        let c = read_candidates(&conn, "vm", None).await.unwrap();
        let (account, object) = settle_account(&conn, c, None).await.unwrap();
        assert_eq!(
            (account.name.as_str(), account.source),
            ("vm", AccountSource::Prepared)
        );
        assert!(object.is_some());
        assert_eq!(log.lock().unwrap().len(), 2, "{:?}", log.lock().unwrap());

        // prepare made another: taken from the list, not read again.
        let (conn, log) = namespace_with(&[("vm-sa", true)]);
        let c = read_candidates(&conn, "vm", None).await.unwrap();
        let (account, object) = settle_account(&conn, c, None).await.unwrap();
        assert_eq!(account.name, "vm-sa");
        assert_eq!(
            object.and_then(|o| o.metadata.name).as_deref(),
            Some("vm-sa")
        );
        assert_eq!(log.lock().unwrap().len(), 2);

        // Nothing there: the namespace's name, absent.
        let (conn, _log) = namespace_with(&[]);
        let c = read_candidates(&conn, "vm", None).await.unwrap();
        let (account, object) = settle_account(&conn, c, None).await.unwrap();
        assert_eq!(account.source, AccountSource::NamespaceName);
        assert!(object.is_none());

        // -s: read by name, nothing listed.
        let (conn, log) = namespace_with(&[("x", false)]);
        let c = read_candidates(&conn, "vm", Some("x")).await.unwrap();
        let (account, object) = settle_account(&conn, c, None).await.unwrap();
        assert_eq!((account.name.as_str(), object.is_some()), ("x", true));
        assert_eq!(
            *log.lock().unwrap(),
            ["GET /api/v1/namespaces/vm/serviceaccounts/x?"]
        );
    }

    #[tokio::test]
    async fn a_group_naming_another_account_costs_one_more_read() {
        let (conn, log) = namespace_with(&[("vm", true), ("other", false)]);
        let c = read_candidates(&conn, "vm", None).await.unwrap();
        let (account, object) = settle_account(&conn, c, Some(("g", "other")))
            .await
            .unwrap();
        assert_eq!(account.source, AccountSource::WorkloadGroup("g".into()));
        assert!(object.is_some());
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!(log[2], "GET /api/v1/namespaces/vm/serviceaccounts/other?");
    }

    #[tokio::test]
    async fn several_made_by_prepare_and_none_named_after_the_namespace_is_ambiguous() {
        let (conn, _log) = namespace_with(&[("a", true), ("b", true)]);
        let c = read_candidates(&conn, "vm", None).await.unwrap();
        let err = settle_account(&conn, c, None).await.unwrap_err();
        assert!(matches!(err, Error::Ambiguous { .. }), "{err}");
    }

    #[test]
    fn the_note_names_namespace_reason_and_flag() {
        let ns = VerbNamespace {
            name: "default".into(),
            source: NamespaceSource::Default("kind".into()),
        };
        assert!(ns.is_implicit_default());
        let note = default_namespace_note(&ns);
        assert!(
            note.contains("namespace default (kubectl's default: context kind sets no namespace)")
                && note.contains("-n NS"),
            "{note}"
        );
        assert!(!VerbNamespace::flag("default").is_implicit_default());
    }

    #[test]
    fn prepare_command_carries_what_differs() {
        assert_eq!(
            prepare_command("expandvm", "expandvm", None, None),
            "kubectl meshvm prepare -n expandvm"
        );
        assert_eq!(
            prepare_command("vm", "vm-sa", Some("vm"), Some("east")),
            "kubectl meshvm prepare -n vm -s vm-sa --workload-group vm --context east"
        );
    }
}
